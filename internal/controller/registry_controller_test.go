package controller

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

func isStalled(reason string) func(*v1alpha1.Registry) bool {
	return func(r *v1alpha1.Registry) bool {
		return hasCondition(r, v1alpha1.StalledCondition, metav1.ConditionTrue, reason) && r.Status.ObservedGeneration == r.Generation
	}
}

func isReady(r *v1alpha1.Registry) bool {
	return hasCondition(r, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason) && r.Status.ObservedGeneration == r.Generation
}

// TestRegistryFreshObjectIsInProgress checks the CRD default that makes a Registry nobody has
// reconciled yet read as InProgress in kstatus (observedGeneration -1), never as Current.
func TestRegistryFreshObjectIsInProgress(t *testing.T) {
	obj := validRegistry()
	obj.Namespace = newNamespace(t)
	if err := k8sClient.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	if g := observedGeneration(t, obj); g != -1 {
		t.Fatalf("fresh object: status.observedGeneration = %d, want the default -1", g)
	}
	if res := kstatusOf(t, obj); res.Status != status.InProgressStatus {
		t.Fatalf("fresh object: kstatus %s (%s), want InProgress", res.Status, res.Message)
	}
}

// TestRegistryCredentialsLifecycle walks a Registry through a missing Secret, a Secret of the wrong
// type, an incomplete one and a valid one: Stalled (kstatus Failed) until the Secret is right, then
// Ready (Current). Each transition is driven by a Secret event alone, through the metadata watch.
func TestRegistryCredentialsLifecycle(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{Username: "robot", Password: "pa55"})
	obj := validRegistry()
	obj.Namespace = ns
	obj.Spec.URL, obj.Spec.Insecure = dist.URL, true
	obj.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: "creds"}
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}

	waitFor(t, obj, "Stalled SecretNotFound", isStalled(v1alpha1.SecretNotFoundReason))
	if res := kstatusOf(t, obj); res.Status != status.FailedStatus {
		t.Fatalf("kstatus %s, want Failed", res.Status)
	}
	if hasCondition(obj, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason) {
		t.Fatal("a stalled Registry must not be Ready")
	}

	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: ns},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{"token": "s3cr3t-value"},
	}
	if err := k8sClient.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitFor(t, obj, "Stalled SecretInvalid (wrong type)", isStalled(v1alpha1.SecretInvalidReason))
	for _, c := range obj.Status.Conditions {
		if containsAll(c.Message, "s3cr3t-value") {
			t.Fatalf("condition %s leaks Secret data: %q", c.Type, c.Message)
		}
	}

	// Secret type is immutable: replace it with a basic-auth Secret lacking a password.
	if err := k8sClient.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	secret = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: ns},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "robot"},
	}
	if err := k8sClient.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitFor(t, obj, "Stalled SecretInvalid (no password)", func(r *v1alpha1.Registry) bool {
		c := findCondition(r, v1alpha1.StalledCondition)
		return c != nil && c.Reason == v1alpha1.SecretInvalidReason && containsAll(c.Message, "password")
	})
	for _, c := range obj.Status.Conditions {
		if containsAll(c.Message, "robot") {
			t.Fatalf("condition %s leaks Secret data: %q", c.Type, c.Message)
		}
	}

	secret.StringData = map[string]string{"username": "robot", "password": "pa55"}
	if err := k8sClient.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitFor(t, obj, "Ready", isReady)
	if res := kstatusOf(t, obj); res.Status != status.CurrentStatus {
		t.Fatalf("kstatus %s (%s), want Current", res.Status, res.Message)
	}
	if findCondition(obj, v1alpha1.StalledCondition) != nil || findCondition(obj, v1alpha1.ReconcilingCondition) != nil {
		t.Fatalf("a Ready Registry keeps no Stalled/Reconciling condition: %+v", obj.Status.Conditions)
	}
}

// TestRegistrySpecStalls covers the manager-side rules that admission cannot know: the host
// allowlist, plain http to a non-loopback host, and a CA Secret without a certificate. (Addresses
// refused at dial time, cloud metadata among them: TestEgressRefusals.)
func TestRegistrySpecStalls(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	if err := k8sClient.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: ns},
		StringData: map[string]string{"ca.crt": "not a certificate"},
	}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		mutate func(*v1alpha1.Registry)
		reason string
	}{
		{"host-not-allowed", func(r *v1alpha1.Registry) { r.Spec.URL = "https://10.0.0.1" }, v1alpha1.HostNotAllowedReason},
		{"any-port-of-allowed-host", func(r *v1alpha1.Registry) { r.Spec.URL = "https://registry.allowed.test:6000" }, ""},
		{"allowed-host-port", func(r *v1alpha1.Registry) { r.Spec.URL = "https://10.1.2.3:5443" }, ""},
		{"other-port-not-allowed", func(r *v1alpha1.Registry) { r.Spec.URL = "https://10.1.2.3:6000" }, v1alpha1.HostNotAllowedReason},
		{"insecure-remote", func(r *v1alpha1.Registry) { r.Spec.URL = "http://plain.allowed.test"; r.Spec.Insecure = true }, v1alpha1.InsecureNotAllowedReason},
		{"insecure-loopback", func(r *v1alpha1.Registry) { r.Spec.URL = "http://127.0.0.1:1"; r.Spec.Insecure = true }, ""},
		{"insecure-loopback-upper-case-scheme", func(r *v1alpha1.Registry) { r.Spec.URL = "HTTP://127.0.0.1:1"; r.Spec.Insecure = true }, ""},
		{"bad-ca", func(r *v1alpha1.Registry) { r.Spec.CertSecretRef = &v1alpha1.LocalObjectReference{Name: "ca"} }, v1alpha1.SecretInvalidReason},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := validRegistry()
			obj.Name, obj.Namespace = tc.name, ns
			obj.Spec.Timeout = &metav1.Duration{Duration: time.Second}
			tc.mutate(obj)
			if err := k8sClient.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			if tc.reason == "" {
				// *.allowed.test matches any port of the host; 10.1.2.3:5443 only that port; loopback http is
				// allowed. Nothing listens there, so passing the checks shows as RegistryUnavailable.
				waitFor(t, obj, "past the endpoint checks", func(r *v1alpha1.Registry) bool {
					return hasCondition(r, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.RegistryUnavailableReason)
				})
				return
			}
			waitFor(t, obj, "Stalled "+tc.reason, isStalled(tc.reason))
		})
	}
}

// TestRegistrySuspend checks that a suspended Registry reports Suspended, final for its generation,
// and that resuming makes it Ready.
func TestRegistrySuspend(t *testing.T) {
	ctx := context.Background()
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	obj := validRegistry()
	obj.Namespace = newNamespace(t)
	obj.Spec.URL, obj.Spec.Insecure = dist.URL, true
	obj.Spec.Suspend = true
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	waitFor(t, obj, "Suspended", func(r *v1alpha1.Registry) bool {
		return hasCondition(r, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SuspendedReason) && r.Status.ObservedGeneration == r.Generation
	})
	patchObject(t, obj, func(r *v1alpha1.Registry) { r.Spec.Suspend = false })
	waitFor(t, obj, "Ready after resume", isReady)
}

// TestRegistrySteadyStateWritesNothing checks that a pass over an unchanged Registry makes no write:
// after Ready, an event on its Secret runs the reconciler again, and the Registry's resourceVersion
// stays the same.
func TestRegistrySteadyStateWritesNothing(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{Username: "u", Password: "p"})
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: ns},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "u", "password": "p"},
	}
	if err := k8sClient.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	obj := validRegistry()
	obj.Namespace = ns
	obj.Spec.URL, obj.Spec.Insecure = dist.URL, true
	obj.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: "creds"}
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	waitFor(t, obj, "Ready", isReady)
	rv := obj.ResourceVersion
	time.Sleep(200 * time.Millisecond) // let the pass that wrote Ready return before counting
	writes := statusWritesOf(obj)
	if writes == 0 {
		t.Fatal("the status writes of the manager are not being counted")
	}

	before := reconcileCount(t, "registry")
	patchObject(t, secret, func(s *corev1.Secret) { s.Labels = map[string]string{"touched": "1"} })
	deadline := time.Now().Add(eventuallyTimeout)
	for reconcileCount(t, "registry") <= before {
		if time.Now().After(deadline) {
			t.Fatal("the Secret event did not run the Registry reconciler")
		}
		time.Sleep(pollInterval)
	}
	time.Sleep(500 * time.Millisecond) // let a (wrong) status patch land if one was sent
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	if n := statusWritesOf(obj) - writes; n != 0 {
		t.Fatalf("a pass over an unchanged Registry sent %d status writes", n)
	}
	if obj.ResourceVersion != rv {
		t.Fatalf("an unchanged Registry was written: resourceVersion %s -> %s; status %+v", rv, obj.ResourceVersion, obj.Status)
	}
}
