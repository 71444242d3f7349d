// Package e2e runs the real manager binary, built from cmd/, as a separate process against a real
// control plane (envtest's kube-apiserver + etcd), and checks what a user sees through the API.
package e2e

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestManagerBinary builds bin/manager, runs it with a kubeconfig as `make run` does, and checks
// readiness, a Registry reaching Ready, a Registry stalled by the --allowed-registry-hosts flag, that
// with WATCH_NAMESPACE (OLM's OwnNamespace mode) a Registry elsewhere is left alone, and a clean exit
// on SIGTERM.
func TestManagerBinary(t *testing.T) {
	dir := t.TempDir()
	manager := buildManager(t)
	cfg, kubeconfig := startControlPlane(t, dir)

	probe := freeAddr(t)
	t.Setenv("WATCH_NAMESPACE", "e2e")
	cmd, exited := startManager(t, manager, kubeconfig, filepath.Join(dir, "manager.log"),
		"--health-probe-bind-address="+probe, "--allowed-registry-hosts=127.0.0.1,*.allowed.test", "--cache-dir="+filepath.Join(dir, "cache"),
		"--egress-allow=127.0.0.0/8")

	waitUntil(t, "manager /readyz", func() bool {
		resp, err := http.Get("http://" + probe + "/readyz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	c := newClient(t, cfg)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "e2e"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	outside := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "outside", Namespace: "default"},
		Spec: v1alpha1.RegistrySpec{URL: "http://127.0.0.1:1", Insecure: true}}
	if err := c.Create(ctx, outside); err != nil {
		t.Fatal(err)
	}
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	digest := dist.Push(t, "team-a/app", "v1", registrytest.RandomImage(t))
	for name, url := range map[string]string{"local": dist.URL, "elsewhere": "https://registry.example.com"} {
		reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "e2e"},
			Spec: v1alpha1.RegistrySpec{URL: url, Insecure: url[:5] == "http:"}}
		if err := c.Create(ctx, reg); err != nil {
			t.Fatal(err)
		}
	}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: "e2e"}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "local"}, Repositories: []string{"**"}}}
	if err := c.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "Registry local Ready and elsewhere Stalled HostNotAllowed", func() bool {
		return conditionIs(ctx, c, "local", v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason) &&
			conditionIs(ctx, c, "elsewhere", v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.HostNotAllowedReason)
	})
	if err := c.Get(ctx, client.ObjectKeyFromObject(outside), outside); err != nil || len(outside.Status.Conditions) > 0 {
		t.Errorf("a Registry outside WATCH_NAMESPACE was reconciled: %+v (%v)", outside.Status, err)
	}
	waitUntil(t, "one ImageAttestation for the pushed image", func() bool {
		list := &v1alpha1.ImageAttestationList{}
		return c.List(ctx, list, client.InNamespace("e2e")) == nil && len(list.Items) == 1 &&
			list.Items[0].Spec.Digest == digest && list.Items[0].Spec.Repository == "team-a/app"
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("manager exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("manager did not exit within 15s of SIGTERM")
	}
}

func conditionIs(ctx context.Context, c client.Client, name, typ string, s metav1.ConditionStatus, reason string) bool {
	reg := &v1alpha1.Registry{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "e2e", Name: name}, reg); err != nil {
		return false
	}
	cond := apimeta.FindStatusCondition(reg.Status.Conditions, typ)
	return cond != nil && cond.Status == s && cond.Reason == reason && reg.Status.ObservedGeneration == reg.Generation
}
