package vsa_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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

	"github.com/portcullis-dev/portcullis/internal/vsa"
	"github.com/portcullis-dev/portcullis/internal/vsa/vsatest"
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
	sv, err := vsa.LoadSigner(pemKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	for _, v := range []vsa.Verdict{
		{Image: ref, Policy: "shop/prod", Generation: 1, Reasons: []string{"SignatureMissing"}, Time: now},
		{Image: ref, Policy: "shop/audit", Generation: 3, Passed: true, Time: now, Version: "v0.1.0"},
		{Image: ref, Policy: "shop/prod", Generation: 2, Passed: true, Time: now.Add(time.Minute)},
	} {
		if err := vsa.Push(ctx, v, sv); err != nil {
			t.Fatal(err)
		}
	}
	got, err := vsatest.Read(ctx, ref, priv.Public())
	if err != nil {
		t.Fatalf("cosign does not verify the verdict attestations: %v", err)
	}
	for policy, v := range got {
		if v.PredicateType != vsa.PredicateType || v.Type != "https://in-toto.io/Statement/v1" || v.SubjectDigest != d.Hex ||
			v.SubjectName != ref.Context().Name() || v.ResourceURI != "oci://"+ref.String() || v.VerifierID != vsa.DefaultVerifierID {
			t.Errorf("%s: statement %+v", policy, v)
		}
	}
	want := map[string]string{
		"shop/prod":  "PASSED k8s://repositorypolicies.registry.portcullis.dev/shop/prod?generation=2 ",
		"shop/audit": "PASSED k8s://repositorypolicies.registry.portcullis.dev/shop/audit?generation=3 ",
	}
	results := map[string]string{}
	for policy, v := range got {
		results[policy] = v.Result + " " + v.PolicyURI + " " + v.Reasons
	}
	if len(got) != 2 || results["shop/prod"] != want["shop/prod"] || results["shop/audit"] != want["shop/audit"] {
		t.Fatalf("%d attestations: %q; want %q", len(got), results, want)
	}
	// A key nobody trusts does not verify them.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := vsatest.Read(ctx, ref, other.Public()); err == nil {
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
	if _, err := vsa.LoadSigner(keys.PrivateBytes, []byte("s3cret")); err != nil {
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
		_, err := vsa.LoadSigner(c.key, c.pass)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), string(keys.PrivateBytes[40:60])) {
			t.Errorf("LoadSigner: %v; want %q", err, c.want)
		}
	}
}
