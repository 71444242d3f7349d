package controller

import (
	"context"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/verify"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// TestBundleSignatureVerification signs images on CNCF Distribution as cosign v3 does by default (a
// sigstore bundle as an OCI 1.1 referrer, kept under the `sha256-<hex>` fallback tag since
// Distribution has no referrers API): the signed image verifies, the fallback tag is not taken for an
// image, and signing the unsigned image later re-verifies it at the next listing (its fallback tag
// appeared).
func TestBundleSignatureVerification(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	px := newProxy(t, dist.URL)
	signer := verifytest.NewBundleSigner(t)
	wopts := ociremote.WithRemoteOptions(remote.WithAuth(dist.Auth()))
	ref := func(digest string) name.Digest {
		d, err := name.NewDigest(dist.Host+"/app@"+digest, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	signed := dist.Push(t, "app", "v1", registrytest.RandomImage(t))
	later := dist.Push(t, "app", "v2", registrytest.RandomImage(t))
	signer.SignBundle(t, ref(signed), wopts)

	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: px.URL, Insecure: true}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "signed", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"},
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{
			Name: "release", Key: &v1alpha1.KeyAuthority{Data: string(signer.PublicPEM)}, IgnoreTransparencyLog: true}}},
	}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ok := imageFor(t, ns, "app", signed, "SignatureVerified=True from the bundle", signatureIs(metav1.ConditionTrue, "Verified"))
	if len(ok.Status.Signatures) != 1 || ok.Status.Signatures[0].Signer != "key release" {
		t.Errorf("signed image status: %+v", ok.Status.Signatures)
	}
	imageFor(t, ns, "app", later, "SignatureMissing before it is signed", signatureIs(metav1.ConditionFalse, verify.ReasonSignatureMissing))
	if n := len(images(t, ns)); n != 2 {
		t.Errorf("want 2 ImageAttestations (the fallback tag's index is not an image), have %d", n)
	}

	signer.SignBundle(t, ref(later), wopts)
	requestPass(t, reg)
	imageFor(t, ns, "app", later, "SignatureVerified=True once signed", signatureIs(metav1.ConditionTrue, "Verified"))
}
