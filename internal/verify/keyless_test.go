package verify

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// testCA is a certificate authority made by the test, standing in for Fulcio.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial int64

func newCA(t *testing.T) testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test-fulcio"},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert: cert, key: key}
}

// trustedRoot is a sigstore trusted_root.json naming ca as the only Fulcio CA.
func (ca testCA) trustedRoot(t *testing.T) []byte {
	t.Helper()
	return trustedRootJSON(t, ca, nil, nil)
}

// trustedRootJSON is a sigstore trusted_root.json naming ca as the Fulcio CA and, when given, tsa as
// the timestamp authority and rekor as the transparency log.
func trustedRootJSON(t *testing.T, ca testCA, tsa *testTSA, rekor *testRekor) []byte {
	t.Helper()
	start := time.Now().Add(-48 * time.Hour)
	var tsas []root.TimestampingAuthority
	if tsa != nil {
		tsas = append(tsas, &root.SigstoreTimestampingAuthority{Root: tsa.root, Leaf: tsa.leaf, ValidityPeriodStart: start, URI: "https://tsa.test"})
	}
	var logs map[string]*root.TransparencyLog
	if rekor != nil {
		logs = verifytest.TransparencyLog(t, &rekor.key.PublicKey)
	}
	return verifytest.TrustedRootJSON(t,
		[]root.CertificateAuthority{&root.FulcioCertificateAuthority{Root: ca.cert, ValidityPeriodStart: start, URI: "https://fulcio.test"}}, tsas, logs)
}

// leaf issues a code-signing certificate for email with the Fulcio OIDC-issuer extension
// (1.3.6.1.4.1.57264.1.1), valid from notBefore to notAfter.
func (ca testCA) leaf(t *testing.T, email, issuer string, notBefore, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return ca.leafFor(t, key.Public(), email, issuer, notBefore, notAfter), key
}

// leafFor issues the certificate of leaf for the public key pub.
func (ca testCA) leafFor(t testing.TB, pub crypto.PublicKey, email, issuer string, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), NotBefore: notBefore, NotAfter: notAfter,
		EmailAddresses: []string{email}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}, Value: []byte(issuer)}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// signKeyless signs subject as `cosign sign` with a Fulcio certificate does (without a transparency
// log): the signature carries the leaf certificate and its chain, plus extra options.
func signKeyless(t *testing.T, subject name.Digest, ca testCA, cert *x509.Certificate, key *ecdsa.PrivateKey,
	extra ...func(payload, raw []byte) static.Option) {
	t.Helper()
	signer, err := signature.LoadSigner(key, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	signWith(t, subject, signer, []static.Option{static.WithCertChain(certPEM(cert), certPEM(ca.cert))}, extra...)
}

// signWith signs subject's simple-signing payload with signer and attaches the signature under
// cosign's `.sig` tag with opts, plus the options extra makes from the payload and raw signature.
func signWith(t *testing.T, subject name.Digest, signer signature.Signer, opts []static.Option, extra ...func(payload, raw []byte) static.Option) {
	t.Helper()
	p, _ := (&payload.Cosign{Image: subject}).MarshalJSON()
	raw, err := signer.SignMessage(strings.NewReader(string(p)))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range extra {
		opts = append(opts, e(p, raw))
	}
	sig, err := static.NewSignature(p, base64.StdEncoding.EncodeToString(raw), opts...)
	if err != nil {
		t.Fatal(err)
	}
	se, err := ociremote.SignedEntity(subject)
	if err != nil {
		t.Fatal(err)
	}
	if se, err = mutate.AttachSignatureToEntity(se, sig); err != nil {
		t.Fatal(err)
	}
	if err := ociremote.WriteSignatures(subject.Context(), se); err != nil {
		t.Fatal(err)
	}
}

func keylessPolicy(subject, subjectRegExp string, ignoreTlog bool) *v1alpha1.VerificationSpec {
	return &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{
		Name: "ci", IgnoreTransparencyLog: ignoreTlog,
		Keyless: &v1alpha1.KeylessAuthority{Issuer: "https://issuer.test", Subject: subject, SubjectRegExp: subjectRegExp, IgnoreSCT: true,
			TrustedRootRef: v1alpha1.TrustedRootReference{Name: "root"}},
	}}}
}

func TestKeylessAuthorities(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	ca, otherCA := newCA(t), newCA(t)
	now := time.Now()
	valid := func(c testCA, email, issuer string) func() (*x509.Certificate, *ecdsa.PrivateKey) {
		return func() (*x509.Certificate, *ecdsa.PrivateKey) {
			return c.leaf(t, email, issuer, now.Add(-time.Minute), now.Add(10*time.Minute))
		}
	}
	cases := []struct {
		name       string
		cert       func() (*x509.Certificate, *ecdsa.PrivateKey)
		signWithCA testCA
		policy     *v1alpha1.VerificationSpec
		reason     string // empty: verified
	}{
		{"identity matches", valid(ca, "ci@example.test", "https://issuer.test"), ca, keylessPolicy("ci@example.test", "", true), ""},
		{"subject regexp matches", valid(ca, "release-bot@example.test", "https://issuer.test"), ca, keylessPolicy("", ".*-bot@example\\.test", true), ""},
		{"regexp matches in full only", valid(ca, "evil-bot@example.test.attacker", "https://issuer.test"), ca, keylessPolicy("", ".*-bot@example\\.test", true), ReasonIdentityMismatch},
		{"other subject", valid(ca, "someone@example.test", "https://issuer.test"), ca, keylessPolicy("ci@example.test", "", true), ReasonIdentityMismatch},
		{"other issuer", valid(ca, "ci@example.test", "https://other-issuer.test"), ca, keylessPolicy("ci@example.test", "", true), ReasonIdentityMismatch},
		{"untrusted CA", valid(otherCA, "ci@example.test", "https://issuer.test"), otherCA, keylessPolicy("ci@example.test", "", true), ReasonCertificateUntrusted},
		{"expired certificate, no timestamp", func() (*x509.Certificate, *ecdsa.PrivateKey) {
			return ca.leaf(t, "ci@example.test", "https://issuer.test", now.Add(-2*time.Hour), now.Add(-time.Hour))
		}, ca, keylessPolicy("ci@example.test", "", true), ReasonTimestampMissing},
		{"transparency log required but absent", valid(ca, "ci@example.test", "https://issuer.test"), ca, keylessPolicy("ci@example.test", "", false), ReasonTransparencyLogUnverifiable},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest := reg.pushImage(t, "kl"+string(rune('a'+i)))
			cert, key := tc.cert()
			signKeyless(t, digest, tc.signWithCA, cert, key)
			res, err := compile(t, tc.policy, Material{"ci": ca.trustedRoot(t)}).Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			ar := res.Authorities[0]
			if tc.reason == "" {
				if !res.Verified || ar.Signer != cert.EmailAddresses[0] || ar.Issuer != "https://issuer.test" {
					t.Fatalf("want verified with the certificate's identity, got %+v", res)
				}
				return
			}
			if res.Verified || ar.Reason != tc.reason {
				t.Fatalf("want %s, got %+v", tc.reason, res)
			}
		})
	}

	t.Run("key signature for a keyless authority", func(t *testing.T) {
		digest := reg.pushImage(t, "kl-key")
		sign(t, digest, newKey(t, "p256", crypto.SHA256).signer, "")
		res, _ := compile(t, keylessPolicy("ci@example.test", "", true), Material{"ci": ca.trustedRoot(t)}).Verify(ctx, digest)
		if res.Verified || res.Authorities[0].Reason != ReasonCertificateMissing {
			t.Fatalf("want CertificateMissing, got %+v", res)
		}
	})

	t.Run("trusted root that does not parse", func(t *testing.T) {
		if _, err := Compile(keylessPolicy("ci@example.test", "", true), Material{"ci": []byte(`{"mediaType":"nope"}`)}); err == nil {
			t.Fatal("want a compile error")
		}
	})
}
