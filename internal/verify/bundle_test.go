package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	sgsign "github.com/sigstore/sigstore-go/pkg/sign"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// caCertificates issues certificates from a test CA for sigstore-go's signer (Fulcio's role).
type caCertificates struct {
	t             testing.TB
	ca            testCA
	email, issuer string
}

func (c caCertificates) GetCertificate(_ context.Context, kp sgsign.Keypair, _ *sgsign.CertificateProviderOptions) ([]byte, error) {
	now := time.Now()
	return c.ca.leafFor(c.t, kp.GetPublicKey(), c.email, c.issuer, now.Add(-time.Minute), now.Add(10*time.Minute)).Raw, nil
}

// bundleTarget is a registry the bundle tests push to: go-containerregistry's registry (referrers
// API) or CNCF Distribution (no referrers API: cosign's writer keeps the fallback tag).
type bundleTarget struct {
	push func(t *testing.T, repo string) (name.Digest, []byte)
	opts []remote.Option
}

func referrersRegistry(t *testing.T) bundleTarget {
	reg := newRegistry(t)
	return bundleTarget{push: func(t *testing.T, repo string) (name.Digest, []byte) {
		d := reg.pushImage(t, repo)
		desc, err := remote.Get(d)
		if err != nil {
			t.Fatal(err)
		}
		return d, desc.Manifest
	}}
}

func distribution(t *testing.T) bundleTarget {
	if os.Getenv(registrytest.BinEnv) == "" {
		t.Skipf("%s is not set (make test sets it)", registrytest.BinEnv)
	}
	d := registrytest.StartDistribution(t, registrytest.Options{})
	auth := remote.WithAuth(d.Auth())
	return bundleTarget{opts: []remote.Option{auth}, push: func(t *testing.T, repo string) (name.Digest, []byte) {
		img, _ := random.Image(128, 1)
		dg := d.Push(t, repo, "v1", img)
		ref, err := name.NewDigest(d.Ref(t, repo+"@"+dg).String(), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := img.RawManifest()
		return ref, raw
	}}
}

// TestBundleSignatures checks cosign v3's default format (sigstore bundles as referrers) on a
// registry with the referrers API and on CNCF Distribution through the fallback tag: every reason.
func TestBundleSignatures(t *testing.T) {
	for _, target := range []struct {
		name string
		make func(*testing.T) bundleTarget
	}{{"referrers API", referrersRegistry}, {"fallback tag (Distribution)", distribution}} {
		t.Run(target.name, func(t *testing.T) { testBundleSignatures(t, target.make(t)) })
	}
}

func testBundleSignatures(t *testing.T, reg bundleTarget) {
	ctx := context.Background()
	ca, otherCA := newCA(t), newCA(t)
	trusted := verifytest.NewBundleSigner(t)
	keyless := func(c testCA, email string) verifytest.BundleSigner {
		s := verifytest.NewBundleSigner(t)
		s.Certificates = caCertificates{t: t, ca: c, email: email, issuer: "https://issuer.test"}
		return s
	}
	wopts := []ociremote.Option{ociremote.WithRemoteOptions(reg.opts...)}
	existingKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	existing := verifytest.BundleSigner{Keypair: verifytest.ECDSAKeypair{Key: existingKey}}
	existingPEM, err := existing.Keypair.GetPublicKeyPem()
	if err != nil {
		t.Fatal(err)
	}
	keyMaterial := Material{"k": trusted.PublicPEM}
	rootMaterial := Material{"ci": ca.trustedRoot(t)}
	cases := []struct {
		name     string
		sign     func(t *testing.T, d name.Digest, manifest []byte)
		policy   *v1alpha1.VerificationSpec
		material Material
		reason   string // empty: verified
		signer   string
	}{
		{name: "DSSE bundle by the key", sign: func(t *testing.T, d name.Digest, _ []byte) { trusted.SignBundle(t, d, wopts...) },
			policy: keyPolicy("k"), material: keyMaterial, signer: "key k"},
		{name: "DSSE bundle by an existing key (cosign.key)", sign: func(t *testing.T, d name.Digest, _ []byte) {
			if err := existing.SignImageBundle(d, wopts...); err != nil {
				t.Fatal(err)
			}
		}, policy: keyPolicy("k"), material: Material{"k": []byte(existingPEM)}, signer: "key k"},
		{name: "message-signature bundle by the key", sign: func(t *testing.T, d name.Digest, m []byte) { trusted.SignMessage(t, d, m, wopts...) },
			policy: keyPolicy("k"), material: keyMaterial, signer: "key k"},
		{name: "bundle by another key", sign: func(t *testing.T, d name.Digest, _ []byte) { verifytest.NewBundleSigner(t).SignBundle(t, d, wopts...) },
			policy: keyPolicy("k"), material: keyMaterial, reason: ReasonKeyMismatch},
		{name: "bundle naming another digest", sign: func(t *testing.T, d name.Digest, _ []byte) {
			st, err := verifytest.Statement(verifytest.CosignSignPredicateType, map[string]any{}, "sha256:"+strings.Repeat("ab", 32))
			if err != nil {
				t.Fatal(err)
			}
			trusted.AttestStatement(t, d, verifytest.CosignSignPredicateType, st, wopts...)
		}, policy: keyPolicy("k"), material: keyMaterial, reason: ReasonDigestMismatch},
		{name: "an attestation is not a signature", sign: func(t *testing.T, d name.Digest, _ []byte) {
			trusted.Attest(t, d, "https://slsa.dev/provenance/v1", map[string]any{"buildType": "x"}, wopts...)
		}, policy: keyPolicy("k"), material: keyMaterial, reason: ReasonSignatureMissing},
		{name: "keyless bundle for a key authority", sign: func(t *testing.T, d name.Digest, _ []byte) {
			keyless(ca, "ci@example.test").SignBundle(t, d, wopts...)
		}, policy: keyPolicy("k"), material: keyMaterial, reason: ReasonKeyMismatch},
		{name: "keyless bundle, identity matches", sign: func(t *testing.T, d name.Digest, _ []byte) {
			keyless(ca, "ci@example.test").SignBundle(t, d, wopts...)
		}, policy: keylessPolicy("ci@example.test", "", true), material: rootMaterial, signer: "ci@example.test"},
		{name: "keyless bundle, other identity", sign: func(t *testing.T, d name.Digest, _ []byte) {
			keyless(ca, "someone@example.test").SignBundle(t, d, wopts...)
		}, policy: keylessPolicy("ci@example.test", "", true), material: rootMaterial, reason: ReasonIdentityMismatch},
		{name: "keyless bundle, untrusted CA", sign: func(t *testing.T, d name.Digest, _ []byte) {
			keyless(otherCA, "ci@example.test").SignBundle(t, d, wopts...)
		}, policy: keylessPolicy("ci@example.test", "", true), material: rootMaterial, reason: ReasonCertificateUntrusted},
		{name: "key bundle for a keyless authority", sign: func(t *testing.T, d name.Digest, _ []byte) { trusted.SignBundle(t, d, wopts...) },
			policy: keylessPolicy("ci@example.test", "", true), material: rootMaterial, reason: ReasonCertificateMissing},
		{name: "keyless bundle without the log the authority requires", sign: func(t *testing.T, d name.Digest, _ []byte) {
			keyless(ca, "ci@example.test").SignBundle(t, d, wopts...)
		}, policy: keylessPolicy("ci@example.test", "", false), material: rootMaterial, reason: ReasonTransparencyLogUnverifiable},
		{name: "key bundle, authority requires a log", sign: func(t *testing.T, d name.Digest, _ []byte) { trusted.SignBundle(t, d, wopts...) },
			policy: func() *v1alpha1.VerificationSpec {
				p := keyPolicy("k")
				p.Authorities[0].IgnoreTransparencyLog = false
				return p
			}(),
			material: keyMaterial, reason: ReasonTransparencyLogUnverifiable},
		{name: "unsigned", sign: func(*testing.T, name.Digest, []byte) {}, policy: keyPolicy("k"), material: keyMaterial, reason: ReasonSignatureMissing},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest, manifest := reg.push(t, "b"+string(rune('a'+i)))
			tc.sign(t, digest, manifest)
			res, err := compile(t, tc.policy, tc.material).With(nil, reg.opts...).Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			ar := res.Authorities[0]
			if tc.reason == "" {
				if !res.Verified || ar.Signer != tc.signer {
					t.Fatalf("want verified by %q, got %+v", tc.signer, res)
				}
				if tc.signer != "key k" && ar.Issuer != "https://issuer.test" {
					t.Fatalf("issuer = %q", ar.Issuer)
				}
				return
			}
			if res.Verified || ar.Reason != tc.reason {
				t.Fatalf("want %s, got %+v", tc.reason, res)
			}
		})
	}

	t.Run("legacy and bundle formats are both checked", func(t *testing.T) {
		digest, _ := reg.push(t, "both")
		legacy := newKey(t, "p256", crypto.SHA256)
		verifytest.Sign(t, digest, legacy.signer, "", wopts...)
		trusted.SignBundle(t, digest, wopts...)
		spec := keyPolicy("legacy", "k")
		res, err := compile(t, spec, Material{"legacy": legacy.pubPEM, "k": trusted.PublicPEM}).With(nil, reg.opts...).Verify(ctx, digest)
		if err != nil || !res.Verified {
			t.Fatalf("want both authorities verified, got %+v, %v", res, err)
		}
	})
}

// rawManifest is a manifest pushed byte for byte.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// A bundle whose referrer carries no artifactType and no annotations (as some cosign versions wrote
// them) is still found: it is classified from its manifest's layers.
func TestBundleWithoutArtifactType(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	digest := reg.pushImage(t, "app")
	signer := verifytest.NewBundleSigner(t)
	st, err := verifytest.Statement(verifytest.CosignSignPredicateType, map[string]any{}, digest.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	layer := static.NewLayer(signer.DSSEBundle(t, st), "application/vnd.dev.sigstore.bundle.v0.3+json")
	config := static.NewLayer([]byte("{}"), emptyJSONMediaType)
	for _, l := range []v1.Layer{layer, config} {
		if err := remote.WriteLayer(digest.Context(), l); err != nil {
			t.Fatal(err)
		}
	}
	subj, err := remote.Head(digest)
	if err != nil {
		t.Fatal(err)
	}
	desc := func(l v1.Layer) map[string]any {
		d, _ := l.Digest()
		n, _ := l.Size()
		mt, _ := l.MediaType()
		return map[string]any{"mediaType": string(mt), "digest": d.String(), "size": n}
	}
	raw, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": string(types.OCIManifestSchema1),
		"config": desc(config), "layers": []any{desc(layer)},
		"subject": map[string]any{"mediaType": string(subj.MediaType), "digest": subj.Digest.String(), "size": subj.Size},
	})
	h, _, _ := v1.SHA256(bytes.NewReader(raw))
	if err := remote.Put(digest.Context().Digest(h.String()), rawManifest{raw: raw, mt: types.OCIManifestSchema1}); err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(digest)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != h || (im.Manifests[0].ArtifactType != "" && im.Manifests[0].ArtifactType != emptyJSONMediaType) {
		t.Fatalf("want only the bare referrer, listed without a bundle artifactType: %+v", im.Manifests)
	}
	res, err := compile(t, keyPolicy("k"), Material{"k": signer.PublicPEM}).Verify(ctx, digest)
	if err != nil || !res.Verified {
		t.Fatalf("want verified, got %+v, %v", res, err)
	}
}

// TestBundleAttestations checks attestations in the bundle format (`cosign attest` v3): predicate
// type, condition, subject and signer, and that a broken one is reported rather than ignored.
func TestBundleAttestations(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	key, other := verifytest.NewBundleSigner(t), verifytest.NewBundleSigner(t)
	const wantType = "https://example.test/build/v1"
	cond := `predicate.buildDefinition.buildType == "` + wantType + `"`
	statementFor := func(t *testing.T, subject string) []byte {
		st, err := verifytest.Statement(slsaV1, provenance(wantType), subject)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	cases := []struct {
		name   string
		setup  func(*testing.T, name.Digest)
		reason string // empty: verified
	}{
		{"condition true", func(t *testing.T, d name.Digest) { key.Attest(t, d, slsaV1, provenance(wantType)) }, ""},
		{"condition false", func(t *testing.T, d name.Digest) { key.Attest(t, d, slsaV1, provenance("https://other.test/v1")) }, ReasonAttestationConditionFailed},
		{"wrong predicate type", func(t *testing.T, d name.Digest) { key.Attest(t, d, "https://spdx.dev/Document", provenance(wantType)) }, ReasonAttestationMissing},
		{"signed by another key", func(t *testing.T, d name.Digest) { other.Attest(t, d, slsaV1, provenance(wantType)) }, ReasonAttestationMissing},
		{"statement about another digest", func(t *testing.T, d name.Digest) {
			key.AttestStatement(t, d, slsaV1, statementFor(t, "sha256:"+strings.Repeat("cd", 32)))
		}, ReasonAttestationInvalid},
		{"payload that is not a statement", func(t *testing.T, d name.Digest) { key.AttestStatement(t, d, slsaV1, []byte("not json")) }, ReasonAttestationInvalid},
		{"one bad, one good", func(t *testing.T, d name.Digest) {
			key.AttestStatement(t, d, slsaV1, []byte("not json"))
			key.Attest(t, d, slsaV1, provenance(wantType))
		}, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest := reg.pushImage(t, "batt"+string(rune('a'+i)))
			key.SignBundle(t, digest)
			tc.setup(t, digest)
			spec := keyPolicy("release")
			spec.Attestations = []v1alpha1.AttestationRequirement{{Name: "provenance", PredicateType: slsaV1, Authority: "release", Condition: cond}}
			res, err := compile(t, spec, Material{"release": key.PublicPEM}).Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Authorities[0].Verified || len(res.Attestations) != 1 {
				t.Fatalf("the bundle signature must verify and one attestation result exist: %+v", res)
			}
			ar := res.Attestations[0]
			if tc.reason == "" {
				if !res.Verified || !ar.Verified {
					t.Fatalf("want verified, got %+v", res)
				}
				return
			}
			if res.Verified || ar.Verified || ar.Reason != tc.reason {
				t.Fatalf("want %s, got %+v", tc.reason, ar)
			}
		})
	}
}
