package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
)

// testRekor is a transparency log made by the test: only its key, which signs entry timestamps.
type testRekor struct {
	key *ecdsa.PrivateKey
	id  []byte // sha256 of the PKIX public key: the log ID
}

func newRekor(t *testing.T) testRekor {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	id := sha256.Sum256(der)
	return testRekor{key: key, id: id[:]}
}

// bundleFor makes the Rekor bundle `cosign sign` attaches: a hashedrekord entry of the signature and
// certificate, integrated at integratedTime, with its signed entry timestamp.
func (r testRekor) bundleFor(t *testing.T, payload, rawSig, certPEMBytes []byte, integratedTime time.Time) *bundle.RekorBundle {
	t.Helper()
	sum := sha256.Sum256(payload)
	body, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1", "kind": "hashedrekord",
		"spec": map[string]any{
			"data":      map[string]any{"hash": map[string]any{"algorithm": "sha256", "value": hex.EncodeToString(sum[:])}},
			"signature": map[string]any{"content": base64.StdEncoding.EncodeToString(rawSig), "publicKey": map[string]any{"content": base64.StdEncoding.EncodeToString(certPEMBytes)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := bundle.RekorPayload{Body: base64.StdEncoding.EncodeToString(body), IntegratedTime: integratedTime.Unix(), LogIndex: 42, LogID: hex.EncodeToString(r.id)}
	contents, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := jsoncanonicalizer.Transform(contents)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(canonical)
	set, err := ecdsa.SignASN1(rand.Reader, r.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return &bundle.RekorBundle{SignedEntryTimestamp: set, Payload: p}
}

// TestTransparencyLog: with the transparency log required (the default), a keyless signature passes
// only with a Rekor bundle whose entry timestamp the trusted root's log key signed, and the entry's
// integrated time is what the short-lived certificate is checked against.
func TestTransparencyLog(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	ca, rekor, otherRekor := newCA(t), newRekor(t), newRekor(t)
	now := time.Now()
	v := compile(t, keylessPolicy("ci@example.test", "", false), Material{"ci": trustedRootJSON(t, ca, nil, &rekor)})
	cases := []struct {
		name      string
		log       testRekor
		notBefore time.Time
		notAfter  time.Time
		at        time.Time
		want      string
	}{
		{"entry signed by the trusted log", rekor, now.Add(-time.Minute), now.Add(10 * time.Minute), now, ""},
		{"expired certificate, integrated while valid", rekor, now.Add(-2 * time.Hour), now.Add(-time.Hour), now.Add(-90 * time.Minute), ""},
		{"expired certificate, integrated after expiry", rekor, now.Add(-2 * time.Hour), now.Add(-time.Hour), now.Add(-30 * time.Minute), ReasonCertificateExpired},
		{"entry signed by another log", otherRekor, now.Add(-time.Minute), now.Add(10 * time.Minute), now, ReasonTransparencyLogUnverifiable},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			digest := reg.pushImage(t, "tl"+string(rune('a'+i)))
			cert, key := ca.leaf(t, "ci@example.test", "https://issuer.test", tc.notBefore, tc.notAfter)
			signKeyless(t, digest, ca, cert, key, func(payload, raw []byte) static.Option {
				return static.WithBundle(tc.log.bundleFor(t, payload, raw, certPEM(cert), tc.at))
			})
			res, err := v.Verify(ctx, digest)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if !res.Verified {
					t.Fatalf("want verified, got %+v", res.Authorities[0])
				}
				return
			}
			if res.Verified || res.Authorities[0].Reason != tc.want {
				t.Fatalf("want %s, got %+v", tc.want, res.Authorities[0])
			}
		})
	}
}
