package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/vsa/vsatest"
)

// TestVerdictAttestation: a policy with spec.verdictAttestation pushes each verdict once as a
// signed SLSA verification summary that cosign verifies with the public key; a pass with the same
// verdict pushes nothing; a new policy generation replaces the attestation; a push the registry
// refuses is an event and leaves the verdict as it is; a key that does not load stalls the policy.
func TestVerdictAttestation(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	p := newProxy(t, dist.URL)
	digest := dist.Push(t, "shop/api", "v1", registrytest.RandomImage(t))
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pemKey, _ := cryptoutils.MarshalPrivateKeyToPEM(priv)
	keySecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "verdict-key", Namespace: ns}, Data: map[string][]byte{"key.pem": pemKey}}
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: p.URL, Insecure: true}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "prod", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"shop/**"},
		VerdictAttestation: &v1alpha1.VerdictAttestationSpec{KeySecretRef: v1alpha1.SecretKeyReference{Name: "verdict-key", Key: "key.pem"}}}}
	for _, o := range []client.Object{keySecret, reg, pol} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	attestedFor := func(gen int64) func(*v1alpha1.ImageAttestation) bool {
		return func(ia *v1alpha1.ImageAttestation) bool {
			return len(ia.Status.Policies) == 1 && ia.Status.Policies[0].ObservedGeneration == gen && ia.Status.Policies[0].Attested != ""
		}
	}
	ia := imageFor(t, ns, "shop/api", digest, "the verdict attested", attestedFor(1))
	first := ia.Status.Policies[0].Attested
	host := strings.TrimPrefix(dist.URL, "http://")
	ref, _ := name.NewDigest(host + "/shop/api@" + digest)
	verdicts := func() map[string]string {
		t.Helper()
		got, err := vsatest.Read(ctx, ref, priv.Public())
		if err != nil {
			t.Fatalf("cosign does not verify the verdict attestation: %v", err)
		}
		out := map[string]string{}
		for policy, v := range got {
			out[policy] = v.PredicateType + " " + v.Result + " " + v.PolicyURI
		}
		return out
	}
	if got, want := verdicts(), "https://slsa.dev/verification_summary/v1 PASSED k8s://repositorypolicies.registry.portcullis.dev/"+ns+"/prod?generation=1"; len(got) != 1 || got[ns+"/prod"] != want {
		t.Fatalf("attestations %q; want one: %q", got, want)
	}

	// The same verdict again: nothing is pushed.
	puts := p.snapshot()["PUT manifest"]
	requestPass(t, reg)
	patchObject(t, ia, func(o *v1alpha1.ImageAttestation) { o.Annotations = map[string]string{"test/touch": "1"} })
	waitFor(t, ia, "re-judged", func(o *v1alpha1.ImageAttestation) bool { return o.Status.ObservedGeneration == o.Generation })
	if n := p.snapshot()["PUT manifest"] - puts; n != 0 {
		t.Errorf("an unchanged verdict pushed %d manifests", n)
	}

	// A new generation: a new verdict replaces the attestation.
	patchObject(t, pol, func(o *v1alpha1.RepositoryPolicy) { o.Spec.Tags.Exclude = []string{"never"} })
	ia = imageFor(t, ns, "shop/api", digest, "the new verdict attested", attestedFor(2))
	if got := verdicts(); len(got) != 1 || !strings.HasSuffix(got[ns+"/prod"], "?generation=2") || ia.Status.Policies[0].Attested == first {
		t.Fatalf("after a new generation: %q, attested %q (was %q)", got, ia.Status.Policies[0].Attested, first)
	}
	second := ia.Status.Policies[0].Attested

	// The registry refuses the push: the verdict of generation 3 stands, an event says why.
	p.mu.Lock()
	p.failPath, p.failCode = ".att", http.StatusForbidden
	p.mu.Unlock()
	patchObject(t, pol, func(o *v1alpha1.RepositoryPolicy) { o.Spec.Tags.Exclude = []string{"never", "nor-this"} })
	ia = imageFor(t, ns, "shop/api", digest, "judged under generation 3", func(o *v1alpha1.ImageAttestation) bool {
		return len(o.Status.Policies) == 1 && o.Status.Policies[0].ObservedGeneration == 3
	})
	if r := ia.Status.Policies[0]; !r.Compliant || r.Attested != second {
		t.Errorf("after a refused push: %+v; want compliant, still attested %q", r, second)
	}
	ev := waitForEvent(t, ns, ia.Name, verdictAttestationFailedReason)
	if !strings.Contains(ev.Note, "registry refused the credentials (HTTP 403)") || strings.Contains(ev.Note, "injected") {
		t.Errorf("event note %q: want the kind and status, not the registry's body", ev.Note)
	}
	p.mu.Lock()
	p.failPath = ""
	p.mu.Unlock()

	// A key that does not load stalls the policy.
	bad := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bad-key", Namespace: ns}, Data: map[string][]byte{"key.pem": []byte("not a key")}}
	badPol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"other/**"},
		VerdictAttestation: &v1alpha1.VerdictAttestationSpec{KeySecretRef: v1alpha1.SecretKeyReference{Name: "bad-key", Key: "key.pem"}}}}
	for _, o := range []client.Object{bad, badPol} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, badPol, "Stalled on the key", func(o *v1alpha1.RepositoryPolicy) bool {
		c := findCondition(o, "Stalled")
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.SecretInvalidReason &&
			strings.Contains(c.Message, "not a PEM private key")
	})
}
