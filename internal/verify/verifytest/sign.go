// Package verifytest signs images in tests as cosign does, with keys made by the test: no network,
// no transparency log.
package verifytest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// KeyPair is a signing key and its PEM public key (as in cosign.pub).
type KeyPair struct {
	Signer    signature.Signer
	PublicPEM []byte
}

// NewKey makes a key of kind "p256", "p384", "rsa" or "ed25519" signing over hash h.
func NewKey(t testing.TB, kind string, h crypto.Hash) KeyPair {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch kind {
	case "p256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := signature.LoadSigner(priv, h)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return KeyPair{Signer: s, PublicPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}
}

// Sign signs subject as `cosign sign --key ... --tlog-upload=false` does: a simple-signing payload
// naming subject, its signature attached with cosign's tag scheme, in sigRepo (on the same registry)
// when given.
func Sign(t testing.TB, subject name.Digest, signer signature.Signer, sigRepo string, opts ...ociremote.Option) {
	t.Helper()
	if err := SignImage(subject, signer, sigRepo, opts...); err != nil {
		t.Fatal(err)
	}
}

// SignImage is Sign outside tests (hack/localenv signs a seeded image with it).
func SignImage(subject name.Digest, signer signature.Signer, sigRepo string, opts ...ociremote.Option) error {
	p, err := (&payload.Cosign{Image: subject}).MarshalJSON()
	if err != nil {
		return err
	}
	raw, err := signer.SignMessage(strings.NewReader(string(p)))
	if err != nil {
		return err
	}
	sig, err := static.NewSignature(p, base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		return err
	}
	target := subject.Context()
	if sigRepo != "" {
		if target, err = name.NewRepository(subject.RegistryStr()+"/"+sigRepo, name.Insecure); err != nil {
			return err
		}
		opts = append(opts, ociremote.WithTargetRepository(target))
	}
	se, err := ociremote.SignedEntity(subject, opts...)
	if err != nil {
		return err
	}
	if se, err = mutate.AttachSignatureToEntity(se, sig); err != nil {
		return err
	}
	return ociremote.WriteSignatures(target, se, opts...)
}

// AttestImage attests subject as `cosign attest --key ... --tlog-upload=false --type <predicateType>`
// does in the legacy format: an in-toto statement naming subject, in a DSSE envelope signed by
// signer, attached with cosign's `.att` tag scheme (added to those already there).
func AttestImage(subject name.Digest, signer signature.Signer, predicateType string, predicate any) error {
	stmt, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": subject.Context().String(), "digest": map[string]string{"sha256": strings.TrimPrefix(subject.DigestStr(), "sha256:")}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	})
	if err != nil {
		return err
	}
	env, err := dsse.WrapSigner(signer, "application/vnd.in-toto+json").SignMessage(strings.NewReader(string(stmt)))
	if err != nil {
		return err
	}
	att, err := static.NewAttestation(env)
	if err != nil {
		return err
	}
	se, err := ociremote.SignedEntity(subject)
	if err != nil {
		return err
	}
	if se, err = mutate.AttachAttestationToEntity(se, att); err != nil {
		return err
	}
	return ociremote.WriteAttestations(subject.Context(), se)
}
