package vsa

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// TestPushVerifiedByCosign pushes verdicts of two policies for one image and a newer verdict of the
// first, then verifies the attestations with cosign's own verifier (what Kyverno and
// policy-controller call) and the public key: two attestations, each a SLSA verification summary
// about the image, the first policy's the newer one.
func TestPushVerifiedByCosign(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	tagRef, _ := name.ParseReference(host + "/shop/api:v1")
	if err := remote.Write(tagRef, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	ref, _ := name.NewDigest(host + "/shop/api@" + d.String())
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pemKey, _ := cryptoutils.MarshalPrivateKeyToPEM(priv)
	sv, err := LoadSigner(pemKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	for _, v := range []Verdict{
		{Image: ref, Policy: "shop/prod", Generation: 1, Reasons: []string{"SignatureMissing"}, Time: now},
		{Image: ref, Policy: "shop/audit", Generation: 3, Passed: true, Time: now, Version: "v0.1.0"},
		{Image: ref, Policy: "shop/prod", Generation: 2, Passed: true, Time: now.Add(time.Minute)},
	} {
		if err := Push(ctx, v, sv); err != nil {
			t.Fatal(err)
		}
	}
	verifier, err := signature.LoadVerifier(priv.Public(), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	atts, _, err := cosign.VerifyImageAttestations(ctx, ref, &cosign.CheckOpts{SigVerifier: verifier, IgnoreTlog: true,
		ClaimVerifier: cosign.IntotoSubjectClaimVerifier})
	if err != nil {
		t.Fatalf("cosign does not verify the verdict attestations: %v", err)
	}
	results := map[string]string{}
	for _, a := range atts {
		ann, _ := a.Annotations()
		raw, _ := a.Payload()
		var env struct{ Payload string }
		_ = json.Unmarshal(raw, &env)
		body, _ := base64.StdEncoding.DecodeString(env.Payload)
		var st struct {
			Type          string `json:"_type"`
			PredicateType string `json:"predicateType"`
			Subject       []struct {
				Name   string
				Digest map[string]string
			}
			Predicate struct {
				Verifier struct {
					ID string `json:"id"`
				}
				ResourceURI        string `json:"resourceUri"`
				VerificationResult string `json:"verificationResult"`
				TimeVerified       string `json:"timeVerified"`
				Policy             struct {
					URI string `json:"uri"`
				}
			}
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
		if st.PredicateType != PredicateType || st.Type != "https://in-toto.io/Statement/v1" || len(st.Subject) != 1 ||
			st.Subject[0].Digest["sha256"] != d.Hex || st.Predicate.ResourceURI != "oci://"+ref.String() || st.Predicate.Verifier.ID != DefaultVerifierID {
			t.Errorf("statement %+v", st)
		}
		results[ann[PolicyAnnotation]] = st.Predicate.VerificationResult + " " + st.Predicate.Policy.URI + " " + ann[ReasonsAnnotation]
	}
	want := map[string]string{
		"shop/prod":  "PASSED k8s://repositorypolicies.registry.portcullis.dev/shop/prod?generation=2 ",
		"shop/audit": "PASSED k8s://repositorypolicies.registry.portcullis.dev/shop/audit?generation=3 ",
	}
	if len(atts) != 2 || results["shop/prod"] != want["shop/prod"] || results["shop/audit"] != want["shop/audit"] {
		t.Fatalf("%d attestations: %q; want %q", len(atts), results, want)
	}
	// A key nobody trusts does not verify them.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ov, _ := signature.LoadVerifier(other.Public(), crypto.SHA256)
	if _, _, err := cosign.VerifyImageAttestations(ctx, ref, &cosign.CheckOpts{SigVerifier: ov, IgnoreTlog: true}); err == nil {
		t.Error("the attestations verify with another key")
	}
}

// TestLoadSigner reads the keys a user has: a PEM private key, a cosign key with its password; a
// wrong password or a non-key is an error that holds no key material.
func TestLoadSigner(t *testing.T) {
	keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return []byte("s3cret"), nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigner(keys.PrivateBytes, []byte("s3cret")); err != nil {
		t.Errorf("cosign key with its password: %v", err)
	}
	for _, c := range []struct {
		key, pass []byte
		want      string
	}{
		{keys.PrivateBytes, []byte("wrong"), "does not open"},
		{[]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), nil, "not a PEM private key"},
		{[]byte("garbage"), nil, "not a PEM private key"},
	} {
		_, err := LoadSigner(c.key, c.pass)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), string(keys.PrivateBytes[40:60])) {
			t.Errorf("LoadSigner: %v; want %q", err, c.want)
		}
	}
}
