package verify

import (
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ggcrmutate "github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// testRegistry is go-containerregistry's in-process registry; fail500 makes it answer 500.
type testRegistry struct {
	*httptest.Server
	host    string
	fail500 atomic.Bool
}

func newRegistry(t testing.TB) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(true))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.fail500.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	r.host = strings.TrimPrefix(r.URL, "http://")
	return r
}

// pushImage pushes a random image as repo:tag and returns its digest reference.
func (r *testRegistry) pushImage(t testing.TB, repo string) name.Digest {
	t.Helper()
	img, err := random.Image(128, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(r.host+"/"+repo+":v1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	dg, err := name.NewDigest(r.host+"/"+repo+"@"+d.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return dg
}

func sign(t testing.TB, subject name.Digest, signer signature.Signer, sigRepo string) {
	t.Helper()
	verifytest.Sign(t, subject, signer, sigRepo)
}

type keyPair struct {
	signer signature.Signer
	pubPEM []byte
}

func newKey(t testing.TB, kind string, h crypto.Hash) keyPair {
	t.Helper()
	k := verifytest.NewKey(t, kind, h)
	return keyPair{signer: k.Signer, pubPEM: k.PublicPEM}
}

func keyPolicy(names ...string) *v1alpha1.VerificationSpec {
	spec := &v1alpha1.VerificationSpec{}
	for _, n := range names {
		spec.Authorities = append(spec.Authorities, v1alpha1.Authority{Name: n, Key: &v1alpha1.KeyAuthority{Data: "x"}, IgnoreTransparencyLog: true})
	}
	return spec
}

func compile(t *testing.T, spec *v1alpha1.VerificationSpec, keys Material) *Verifier {
	t.Helper()
	v, err := Compile(spec, keys)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKeyAuthorities(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	cases := []struct {
		name    string
		kind    string
		hash    crypto.Hash
		signed  bool
		wrong   bool // signed with another key
		sigRepo string
		reason  string // empty: verified
	}{
		{name: "p256 sha256", kind: "p256", hash: crypto.SHA256, signed: true},
		{name: "p384 sha384", kind: "p384", hash: crypto.SHA384, signed: true},
		{name: "p256 sha512", kind: "p256", hash: crypto.SHA512, signed: true},
		{name: "rsa sha256", kind: "rsa", hash: crypto.SHA256, signed: true},
		{name: "ed25519", kind: "ed25519", hash: crypto.SHA512, signed: true},
		{name: "signatures in another repository", kind: "p256", hash: crypto.SHA256, signed: true, sigRepo: "signatures/app"},
		{name: "unsigned", kind: "p256", hash: crypto.SHA256, reason: ReasonSignatureMissing},
		{name: "wrong key", kind: "p256", hash: crypto.SHA256, signed: true, wrong: true, reason: ReasonKeyMismatch},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest := reg.pushImage(t, "app"+string(rune('a'+i)))
			trusted := newKey(t, tc.kind, tc.hash)
			signer := trusted
			if tc.wrong {
				signer = newKey(t, tc.kind, tc.hash)
			}
			if tc.signed {
				sign(t, digest, signer.signer, tc.sigRepo)
			}
			spec := keyPolicy("release")
			spec.SignatureRepository = tc.sigRepo
			res, err := compile(t, spec, Material{"release": trusted.pubPEM}).Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			ar := res.Authorities[0]
			if tc.reason == "" {
				if !res.Verified || !ar.Verified || ar.Signer != "key release" {
					t.Fatalf("want verified, got %+v", res)
				}
				return
			}
			if res.Verified || ar.Verified || ar.Reason != tc.reason {
				t.Fatalf("want not verified with %s, got %+v", tc.reason, res)
			}
		})
	}
}

// TestSignatureOfAnotherDigest: a signature whose payload names another digest, copied under this
// digest's signature tag, does not verify.
func TestSignatureOfAnotherDigest(t *testing.T) {
	reg := newRegistry(t)
	key := newKey(t, "p256", crypto.SHA256)
	a, b := reg.pushImage(t, "app"), reg.pushImage(t, "app")
	sign(t, a, key.signer, "")
	// Copy a's signature image to b's signature tag.
	aTag, _ := ociremote.SignatureTag(a)
	bTag, _ := ociremote.SignatureTag(b)
	img, err := remote.Image(aTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(bTag, img); err != nil {
		t.Fatal(err)
	}
	res, err := compile(t, keyPolicy("k"), Material{"k": key.pubPEM}).Verify(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified || res.Authorities[0].Reason != ReasonDigestMismatch {
		t.Fatalf("want DigestMismatch, got %+v", res)
	}
}

func TestRequireAndTransparencyLog(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	k1, k2 := newKey(t, "p256", crypto.SHA256), newKey(t, "p256", crypto.SHA256)
	digest := reg.pushImage(t, "app")
	sign(t, digest, k1.signer, "")
	keys := Material{"one": k1.pubPEM, "two": k2.pubPEM}

	spec := keyPolicy("one", "two")
	if res, _ := compile(t, spec, keys).Verify(ctx, digest); res.Verified {
		t.Fatalf("default require is all authorities: %+v", res)
	}
	one := int32(1)
	spec.Require = &one
	res, err := compile(t, spec, keys).Verify(ctx, digest)
	if err != nil || !res.Verified || !res.Authorities[0].Verified || res.Authorities[1].Reason != ReasonKeyMismatch {
		t.Fatalf("require 1: %+v, %v", res, err)
	}

	strict := keyPolicy("one")
	strict.Authorities[0].IgnoreTransparencyLog = false
	res, _ = compile(t, strict, keys).Verify(ctx, digest)
	if res.Verified || res.Authorities[0].Reason != ReasonTransparencyLogUnverifiable {
		t.Fatalf("a required transparency log it cannot check must fail safe: %+v", res)
	}

}

func TestRegistryFailureIsAnError(t *testing.T) {
	reg := newRegistry(t)
	key := newKey(t, "p256", crypto.SHA256)
	digest := reg.pushImage(t, "app")
	sign(t, digest, key.signer, "")
	reg.fail500.Store(true)
	_, err := compile(t, keyPolicy("k"), Material{"k": key.pubPEM}).Verify(context.Background(), digest)
	if !errors.Is(err, ErrRegistry) {
		t.Fatalf("a registry failure must be ErrRegistry, got %v", err)
	}
}

func TestCompileRejectsBadKeys(t *testing.T) {
	if _, err := Compile(keyPolicy("k"), Material{"k": []byte("not a key")}); err == nil || !strings.Contains(err.Error(), `authority "k"`) {
		t.Fatalf("want an error naming the authority, got %v", err)
	}
	if _, err := Compile(keyPolicy("k"), Material{}); err == nil {
		t.Fatal("missing key material must fail")
	}
}

// TestReferrers: a signature stored as an OCI 1.1 referrer (cosign's --registry-referrers-mode=oci-1-1)
// verifies; a referrer of another artifact type is ignored (the in-process registry does not filter).
func TestReferrers(t *testing.T) {
	reg := newRegistry(t)
	key := newKey(t, "p256", crypto.SHA256)
	digest := reg.pushImage(t, "app")
	p, _ := (&payload.Cosign{Image: digest}).MarshalJSON()
	raw, err := key.signer.SignMessage(strings.NewReader(string(p)))
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := static.NewSignature(p, base64.StdEncoding.EncodeToString(raw))
	se, err := ociremote.SignedEntity(digest)
	if err != nil {
		t.Fatal(err)
	}
	if se, err = mutate.AttachSignatureToEntity(se, sig); err != nil {
		t.Fatal(err)
	}
	if err := ociremote.WriteSignaturesExperimentalOCI(digest, se); err != nil {
		t.Fatal(err)
	}
	if tag, _ := ociremote.SignatureTag(digest); func() bool { _, err := remote.Head(tag); return err == nil }() {
		t.Fatal("the signature must be stored only as a referrer for this test")
	}
	res, err := compile(t, keyPolicy("k"), Material{"k": key.pubPEM}).Verify(context.Background(), digest)
	if err != nil || !res.Verified {
		t.Fatalf("referrer signature: %+v, %v", res, err)
	}
	other := reg.pushImage(t, "other")
	// A referrer of another artifact type (an SBOM, say) must be filtered out, not read as signatures.
	sbom, _ := random.Image(64, 1)
	sbom = ggcrmutate.ConfigMediaType(sbom, "application/vnd.example.sbom.v1+json")
	desc, err := remote.Head(other)
	if err != nil {
		t.Fatal(err)
	}
	sbom = ggcrmutate.Subject(sbom, *desc).(v1.Image)
	sd, _ := sbom.Digest()
	if err := remote.Write(other.Context().Digest(sd.String()), sbom); err != nil {
		t.Fatal(err)
	}
	res, err = compile(t, keyPolicy("k"), Material{"k": key.pubPEM}).Verify(context.Background(), other)
	if err != nil || res.Verified || res.Authorities[0].Reason != ReasonSignatureMissing {
		t.Fatalf("unsigned digest: %+v, %v", res, err)
	}
}
