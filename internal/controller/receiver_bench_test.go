package controller

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/receiver"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// BenchmarkPushToVerdict measures the time from a push of a small image (scanning on) to its
// verdict, through the push receiver (Distribution notifies the manager) and, side by side,
// through the listing alone at the shortest interval (30s). Reported: the median and the longest
// push-to-verdict time of b.N pushes (make bench: 5 each).
func BenchmarkPushToVerdict(b *testing.B) {
	for _, bc := range []struct {
		name   string
		notify bool
	}{{"receiver", true}, {"interval-30s", false}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}
			if err := k8sClient.Create(ctx, nsObj); err != nil {
				b.Fatal(err)
			}
			ns := nsObj.Name
			const token = "bench-token"
			distAddr := freeAddr(b)
			reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
				URL: "http://" + distAddr, Insecure: true, Interval: &metav1.Duration{Duration: 30 * time.Second}}}
			var notify *registrytest.NotifyEndpoint
			if bc.notify {
				reg.Spec.Interval.Duration = 24 * time.Hour
				reg.Spec.Notifications = &v1alpha1.NotificationsSpec{SecretRef: v1alpha1.LocalObjectReference{Name: "hook"}}
			}
			objs := []client.Object{
				&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns}, Data: map[string][]byte{"token": []byte(token)}},
				&v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
					RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"},
					Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxCritical: ptr(int32(0))}}}},
				reg,
			}
			for _, o := range objs {
				if err := k8sClient.Create(ctx, o); err != nil {
					b.Fatal(err)
				}
			}
			if bc.notify {
				notify = &registrytest.NotifyEndpoint{URL: startReceiver(b) + receiver.Path(reg.UID), Token: token}
			}
			dist := registrytest.StartDistribution(b, registrytest.Options{Addr: distAddr, Notify: notify})
			var took []time.Duration
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				d := dist.Push(b, "bench/app", fmt.Sprintf("v%d", i), registrytest.RandomImage(b))
				name := imageAttestationName("dist", "bench/app", d)
				for {
					ia := &v1alpha1.ImageAttestation{}
					if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ia); err == nil && len(ia.Status.Policies) == 1 &&
						ia.Status.Scanner != nil {
						break
					}
					if time.Since(start) > 2*time.Minute {
						b.Fatalf("no verdict for push %d after 2 minutes", i)
					}
					time.Sleep(20 * time.Millisecond)
				}
				took = append(took, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(took[len(took)/2].Seconds(), "s-p50")
			b.ReportMetric(took[len(took)-1].Seconds(), "s-max")
		})
	}
}
