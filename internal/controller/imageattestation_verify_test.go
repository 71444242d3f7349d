package controller

import (
	"context"
	"crypto"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/verify"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// imageFor waits for the ImageAttestation of repository@digest and returns it.
func imageFor(t *testing.T, ns, repo, digest string, what string, cond func(*v1alpha1.ImageAttestation) bool) *v1alpha1.ImageAttestation {
	t.Helper()
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		if ia, ok := images(t, ns)[repo+"@"+digest]; ok && cond(&ia) {
			return &ia
		}
		if time.Now().After(deadline) {
			ia := images(t, ns)[repo+"@"+digest]
			t.Fatalf("%s@%s: timed out waiting for %s; status %+v", repo, digest, what, ia.Status)
		}
		time.Sleep(pollInterval)
	}
}

func signatureIs(s metav1.ConditionStatus, reason string) func(*v1alpha1.ImageAttestation) bool {
	return func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.SignatureVerifiedCondition, s, reason)
	}
}

// TestSignatureVerification signs images in a real Distribution registry with keys made by the test
// and checks the verdicts: a signed image verifies (with its signer), an unsigned one is
// SignatureMissing, an index whose platforms are signed passes under Either, a rotated policy key
// re-verifies everything (KeyMismatch), and a registry failure keeps the last verdict.
func TestSignatureVerification(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	px := newProxy(t, dist.URL)
	key, otherKey := verifytest.NewKey(t, "p256", crypto.SHA256), verifytest.NewKey(t, "p256", crypto.SHA256)

	signed := dist.Push(t, "app", "v1", registrytest.RandomImage(t))
	unsigned := dist.Push(t, "app", "v2", registrytest.RandomImage(t))
	idx := registrytest.PlatformIndex(t, "linux/amd64", "linux/arm64")
	idxDigest := dist.PushIndex(t, "multi", "v1", idx)
	ref := func(repo, digest string) name.Digest {
		d, err := name.NewDigest(dist.Host+"/"+repo+"@"+digest, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	verifytest.Sign(t, ref("app", signed), key.Signer, "")
	im, _ := idx.IndexManifest()
	for _, m := range im.Manifests {
		verifytest.Sign(t, ref("multi", m.Digest.String()), key.Signer, "")
	}

	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: px.URL, Insecure: true}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "signed", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"},
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{
			Name: "release", Key: &v1alpha1.KeyAuthority{Data: string(key.PublicPEM)}, IgnoreTransparencyLog: true}}},
	}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	ok := imageFor(t, ns, "app", signed, "SignatureVerified=True", signatureIs(metav1.ConditionTrue, "Verified"))
	if n := len(images(t, ns)); n != 3 {
		t.Errorf("want 3 ImageAttestations (signature tags are not images), have %d", n)
	}
	if len(ok.Status.Signatures) != 1 || !ok.Status.Signatures[0].Verified || ok.Status.Signatures[0].Signer != "key release" ||
		ok.Status.Signatures[0].Policy != "signed" || ok.Status.LastVerifiedTime == nil {
		t.Errorf("signed image status: %+v", ok.Status)
	}
	bad := imageFor(t, ns, "app", unsigned, "SignatureMissing", signatureIs(metav1.ConditionFalse, verify.ReasonSignatureMissing))
	if bad.Status.Signatures[0].Verified || bad.Status.Signatures[0].Reason != verify.ReasonSignatureMissing {
		t.Errorf("unsigned image status: %+v", bad.Status.Signatures)
	}
	multi := imageFor(t, ns, "multi", idxDigest, "index verified through its platforms", signatureIs(metav1.ConditionTrue, "Verified"))
	if m := multi.Status.Signatures[0].Message; !containsAll(m, verify.LevelPlatforms) {
		t.Errorf("the index result must say it was signed at the platform level: %q", m)
	}
	// The policy requires signatures only: a verified image complies, an unsigned one does not, and
	// both have a current verdict (Ready).
	ok = imageFor(t, ns, "app", signed, "Compliant", func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.PolicyCompliantCondition, metav1.ConditionTrue, compliantReason) &&
			hasCondition(ia, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason)
	})
	bad = imageFor(t, ns, "app", unsigned, "non-compliant: SignatureMissing", func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.PolicyCompliantCondition, metav1.ConditionFalse, verify.ReasonSignatureMissing) &&
			hasCondition(ia, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason)
	})
	if len(bad.Status.Policies) != 1 || bad.Status.Policies[0].Compliant || !slices.Equal(bad.Status.Policies[0].Reasons, []string{verify.ReasonSignatureMissing}) {
		t.Errorf("status.policies of the unsigned image: %+v", bad.Status.Policies)
	}

	// A registry failure while fetching signatures keeps the last verdict and says why.
	px.fail(".sig", http.StatusInternalServerError)
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Verification.IndexPolicy = v1alpha1.IndexPolicyPlatforms })
	kept := imageFor(t, ns, "app", signed, "RegistryUnavailable with the verdict kept", func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.RegistryUnavailableReason)
	})
	if !hasCondition(kept, v1alpha1.SignatureVerifiedCondition, metav1.ConditionTrue, "Verified") {
		t.Errorf("a registry failure flipped the verdict: %+v", findCondition(kept, v1alpha1.SignatureVerifiedCondition))
	}
	px.fail("", 0)

	// Rotating the policy's key re-verifies every image of the Registry.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Verification.Authorities[0].Key.Data = string(otherKey.PublicPEM)
	})
	imageFor(t, ns, "app", signed, "KeyMismatch after the key rotation", signatureIs(metav1.ConditionFalse, verify.ReasonKeyMismatch))

	// The key moves to a Secret; rotating the Secret alone (no policy generation change) re-verifies.
	keySecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cosign", Namespace: ns},
		Data: map[string][]byte{"cosign.pub": otherKey.PublicPEM}}
	if err := k8sClient.Create(ctx, keySecret); err != nil {
		t.Fatal(err)
	}
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Verification.Authorities[0].Key = &v1alpha1.KeyAuthority{SecretRef: &v1alpha1.SecretKeyReference{Name: "cosign", Key: "cosign.pub"}}
	})
	imageFor(t, ns, "app", signed, "still KeyMismatch with the Secret", signatureIs(metav1.ConditionFalse, verify.ReasonKeyMismatch))
	patchObject(t, keySecret, func(s *corev1.Secret) { s.Data = map[string][]byte{"cosign.pub": key.PublicPEM} })
	imageFor(t, ns, "app", signed, "Verified after the Secret rotation", signatureIs(metav1.ConditionTrue, "Verified"))
}
