package verify

import (
	"context"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/notaryproject/notation-go"
	notationregistry "github.com/notaryproject/notation-go/registry"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	orasremote "oras.land/oras-go/v2/registry/remote"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

const jws, cose = "application/jose+json", "application/cose"

func notationPolicy(identities ...string) *v1alpha1.VerificationSpec {
	return &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "release", Notation: &v1alpha1.NotationAuthority{
		TrustStoreRef: v1alpha1.CertificatesReference{Name: "ca"}, TrustedIdentities: identities}}}}
}

// pushNotationEnvelope pushes envelope as a Notary Project signature of subject, with notation-go's
// registry client, whatever the envelope signs (notation.Sign would only push a matching one).
func pushNotationEnvelope(t *testing.T, subject name.Digest, mediaType string, envelope []byte) {
	t.Helper()
	ctx := context.Background()
	repo, err := orasremote.NewRepository(subject.Context().Name())
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = subject.Scheme() == "http"
	nr := notationregistry.NewRepository(repo)
	desc, err := nr.Resolve(ctx, subject.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nr.PushSignature(ctx, mediaType, envelope, desc, nil); err != nil {
		t.Fatal(err)
	}
}

// TestNotationSignatures checks Notary Project signatures made and pushed with notation-go (as
// `notation sign` does) on a registry with the referrers API and on CNCF Distribution through the
// referrers fallback tag: both envelope formats, trusted identities, and every reason.
func TestNotationSignatures(t *testing.T) {
	for _, target := range []struct {
		name string
		make func(*testing.T) bundleTarget
	}{{"referrers API", referrersRegistry}, {"fallback tag (Distribution)", distribution}} {
		t.Run(target.name, func(t *testing.T) { testNotationSignatures(t, target.make(t)) })
	}
}

func testNotationSignatures(t *testing.T, reg bundleTarget) {
	ctx := context.Background()
	ca, otherCA := verifytest.NewNotationCA(t, "Portcullis Test Root"), verifytest.NewNotationCA(t, "Other Root")
	release := pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Example"}, CommonName: "release"}
	trusted := ca.Signer(t, release)
	material := Material{"release": ca.PEM}
	wopts := []ociremote.Option{ociremote.WithRemoteOptions(reg.opts...)}
	const releaseIdentity = "x509.subject:C=US, ST=WA, O=Example, CN=release"
	cases := []struct {
		name   string
		sign   func(t *testing.T, d name.Digest)
		policy *v1alpha1.VerificationSpec
		reason string // empty: verified
	}{
		{name: "JWS by a certificate of the trust store", sign: func(t *testing.T, d name.Digest) {
			verifytest.NotationSign(t, trusted, d, jws, 0)
		}, policy: notationPolicy("*")},
		{name: "COSE by a certificate of the trust store", sign: func(t *testing.T, d name.Digest) {
			verifytest.NotationSign(t, trusted, d, cose, 0)
		}, policy: notationPolicy("*")},
		{name: "trusted identity matches", sign: func(t *testing.T, d name.Digest) {
			verifytest.NotationSign(t, trusted, d, jws, 0)
		}, policy: notationPolicy(releaseIdentity)},
		{name: "another identity of the same CA", sign: func(t *testing.T, d name.Digest) {
			verifytest.NotationSign(t, ca.Signer(t, pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Organization: []string{"Example"}, CommonName: "nightly"}), d, jws, 0)
		}, policy: notationPolicy(releaseIdentity), reason: ReasonIdentityMismatch},
		{name: "a certificate of another CA", sign: func(t *testing.T, d name.Digest) {
			verifytest.NotationSign(t, otherCA.Signer(t, release), d, jws, 0)
		}, policy: notationPolicy("*"), reason: ReasonCertificateUntrusted},
		{name: "an envelope signing another manifest", sign: func(t *testing.T, d name.Digest) {
			other := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: godigest.Digest("sha256:" + strings.Repeat("ab", 32)), Size: 500}
			env, _, err := trusted.Sign(ctx, other, notation.SignerSignOptions{SignatureMediaType: jws})
			if err != nil {
				t.Fatal(err)
			}
			pushNotationEnvelope(t, d, jws, env)
		}, policy: notationPolicy("*"), reason: ReasonDigestMismatch},
		{name: "a tampered envelope", sign: func(t *testing.T, d name.Digest) {
			desc := describeForTest(t, d, reg.opts)
			env, _, err := trusted.Sign(ctx, desc, notation.SignerSignOptions{SignatureMediaType: jws})
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(env, &m); err != nil {
				t.Fatal(err)
			}
			sig := []byte(m["signature"].(string))
			sig[10] ^= 'A' ^ 'B' // one base64url character of the signature changed
			m["signature"] = string(sig)
			tampered, _ := json.Marshal(m)
			pushNotationEnvelope(t, d, jws, tampered)
		}, policy: notationPolicy("*"), reason: ReasonSignatureInvalid},
		{name: "unsigned", sign: func(*testing.T, name.Digest) {}, policy: notationPolicy("*"), reason: ReasonSignatureMissing},
		{name: "a cosign signature only", sign: func(t *testing.T, d name.Digest) {
			verifytest.NewBundleSigner(t).SignBundle(t, d, wopts...)
		}, policy: notationPolicy("*"), reason: ReasonSignatureMissing},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest, _ := reg.push(t, "n"+string(rune('a'+i)))
			tc.sign(t, digest)
			res, err := compile(t, tc.policy, material).With(nil, reg.opts...).Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			ar := res.Authorities[0]
			if tc.reason == "" {
				if !res.Verified || !strings.Contains(ar.Signer, "CN=release") {
					t.Fatalf("want verified with the signer's subject, got %+v", res)
				}
				return
			}
			if res.Verified || ar.Reason != tc.reason {
				t.Fatalf("want %s, got %+v", tc.reason, res)
			}
		})
	}

	t.Run("an expired signature", func(t *testing.T) {
		digest, _ := reg.push(t, "expired")
		verifytest.NotationSign(t, trusted, digest, jws, time.Second)
		time.Sleep(1100 * time.Millisecond)
		res, err := compile(t, notationPolicy("*"), material).With(nil, reg.opts...).Verify(ctx, digest)
		if err != nil || res.Verified || res.Authorities[0].Reason != ReasonSignatureExpired {
			t.Fatalf("want %s, got %+v, %v", ReasonSignatureExpired, res, err)
		}
	})
	t.Run("a certificate expired since signing, no timestamp", func(t *testing.T) {
		digest, _ := reg.push(t, "certexpired")
		// x509 validity has one-second resolution: the certificate is valid for the signing (about
		// now) and has expired two seconds later.
		short := ca.SignerValidUntil(t, release, time.Now().Add(time.Second))
		verifytest.NotationSign(t, short, digest, jws, 0)
		time.Sleep(2100 * time.Millisecond)
		res, err := compile(t, notationPolicy("*"), material).With(nil, reg.opts...).Verify(ctx, digest)
		if err != nil || res.Verified || res.Authorities[0].Reason != ReasonCertificateExpired {
			t.Fatalf("want %s, got %+v, %v", ReasonCertificateExpired, res, err)
		}
	})
	t.Run("cosign and notation authorities together", func(t *testing.T) {
		digest, _ := reg.push(t, "both")
		cosignSigner := verifytest.NewBundleSigner(t)
		cosignSigner.SignBundle(t, digest, wopts...)
		verifytest.NotationSign(t, trusted, digest, jws, 0)
		spec := notationPolicy("*")
		spec.Authorities = append(spec.Authorities, keyPolicy("k").Authorities...)
		res, err := compile(t, spec, Material{"release": ca.PEM, "k": cosignSigner.PublicPEM}).With(nil, reg.opts...).Verify(ctx, digest)
		if err != nil || !res.Verified || !res.Authorities[0].Verified || !res.Authorities[1].Verified {
			t.Fatalf("want both verified, got %+v, %v", res, err)
		}
	})
}

// describeForTest reads d's manifest descriptor, as notation sign resolves it.
func describeForTest(t *testing.T, d name.Digest, opts []remote.Option) ocispec.Descriptor {
	t.Helper()
	desc, err := remote.Head(d, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: string(desc.MediaType), Digest: godigest.Digest(desc.Digest.String()), Size: desc.Size}
}

// TestNotationNotFetchedWithoutNotationAuthority checks that a policy with cosign authorities only
// never downloads Notary Project signatures: the referrers list is read, their manifests are not.
func TestNotationNotFetchedWithoutNotationAuthority(t *testing.T) {
	reg := newRegistry(t)
	var manifestGets atomic.Int64
	inner := reg.Config.Handler
	reg.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/sha256:") {
			manifestGets.Add(1)
		}
		inner.ServeHTTP(w, r)
	})
	digest := reg.pushImage(t, "app")
	ca := verifytest.NewNotationCA(t, "root")
	verifytest.NotationSign(t, ca.Signer(t, pkix.Name{CommonName: "release"}), digest, jws, 0)
	k := verifytest.NewBundleSigner(t)
	before := manifestGets.Load()
	res, err := compile(t, keyPolicy("k"), Material{"k": k.PublicPEM}).Verify(context.Background(), digest)
	if err != nil || res.Verified || res.Authorities[0].Reason != ReasonSignatureMissing {
		t.Fatalf("want SignatureMissing, got %+v, %v", res, err)
	}
	if n := manifestGets.Load() - before; n != 0 {
		t.Fatalf("%d manifest GETs by digest (the Notary Project signature's), want 0", n)
	}
	res, err = compile(t, notationPolicy("*"), Material{"release": ca.PEM}).Verify(context.Background(), digest)
	if err != nil || !res.Verified {
		t.Fatalf("the same signature with a notation authority: %+v, %v", res, err)
	}
	if n := manifestGets.Load() - before; n != 1 {
		t.Fatalf("%d manifest GETs by digest with a notation authority, want 1 (the signature manifest)", n)
	}
}
