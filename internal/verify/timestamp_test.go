package verify

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
)

// testTSA is an RFC 3161 timestamp authority made by the test: a root and a timestamping leaf.
type testTSA struct {
	root, leaf *x509.Certificate
	key        *ecdsa.PrivateKey
}

func newTSA(t *testing.T) testTSA {
	t.Helper()
	ca := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test-tsa"},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
		// RFC 3161 section 2.3: the only extended key usage, id-kp-timeStamping, marked critical.
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: true,
			Value: mustMarshal(t, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 8}})}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return testTSA{root: ca.cert, leaf: leaf, key: key}
}

// stamp is a signed RFC 3161 timestamp response over data at time at.
func (tsa testTSA) stamp(t *testing.T, data []byte, at time.Time) []byte {
	t.Helper()
	sum := sha256.Sum256(data)
	ts := timestamp.Timestamp{HashAlgorithm: crypto.SHA256, HashedMessage: sum[:], Time: at,
		Policy: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 99}, SerialNumber: big.NewInt(time.Now().UnixNano()), AddTSACertificate: true}
	resp, err := ts.CreateResponseWithOpts(tsa.leaf, tsa.key, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// stamped attaches an RFC 3161 timestamp of the signature made by tsa at signedAt.
func stamped(t *testing.T, tsa testTSA, signedAt time.Time) func(payload, raw []byte) static.Option {
	return func(_, raw []byte) static.Option {
		return static.WithRFC3161Timestamp(&bundle.RFC3161Timestamp{SignedRFC3161Timestamp: tsa.stamp(t, raw, signedAt)})
	}
}

// TestSignedTimestamps: an expired short-lived certificate passes only with useSignedTimestamps and
// a timestamp, from a trusted TSA, inside the certificate's validity.
func TestSignedTimestamps(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	ca, tsa, otherTSA := newCA(t), newTSA(t), newTSA(t)
	now := time.Now()
	trusted := Material{"ci": trustedRootJSON(t, ca, &tsa, nil)}
	policy := func(use bool) *Verifier {
		spec := keylessPolicy("ci@example.test", "", true)
		spec.Authorities[0].Keyless.UseSignedTimestamps = use
		return compile(t, spec, trusted)
	}
	cases := []struct {
		name string
		by   testTSA
		at   time.Time
		use  bool
		want string // empty: verified
	}{
		{"timestamp inside the validity", tsa, now.Add(-90 * time.Minute), true, ""},
		{"timestamps not used", tsa, now.Add(-90 * time.Minute), false, ReasonTimestampMissing},
		{"timestamp after expiry", tsa, now.Add(-30 * time.Minute), true, ReasonCertificateExpired},
		{"untrusted timestamp authority", otherTSA, now.Add(-90 * time.Minute), true, ReasonTimestampInvalid},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest := reg.pushImage(t, "ts"+string(rune('a'+i)))
			cert, key := ca.leaf(t, "ci@example.test", "https://issuer.test", now.Add(-2*time.Hour), now.Add(-time.Hour))
			signKeyless(t, digest, ca, cert, key, stamped(t, tc.by, tc.at))
			res, err := policy(tc.use).Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if !res.Verified {
					t.Fatalf("want verified, got %+v", res)
				}
				return
			}
			if res.Verified || res.Authorities[0].Reason != tc.want {
				t.Fatalf("want %s, got %+v", tc.want, res.Authorities[0])
			}
		})
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
