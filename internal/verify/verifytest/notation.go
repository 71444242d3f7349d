package verifytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/notaryproject/notation-go"
	notationregistry "github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/signer"
	"oras.land/oras-go/v2/registry/remote"
)

// NotationCA is a test certificate authority for Notary Project signatures: a self-signed root (the
// trust store's `ca` certificate) that issues code-signing leaf certificates, as
// `notation cert generate-test` makes for a local key.
type NotationCA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is Cert in PEM, what a notation authority's trust store holds.
	PEM []byte
}

// NewNotationCA makes a root CA valid from an hour ago for a day.
func NewNotationCA(t testing.TB, cn string) NotationCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"Portcullis Test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return NotationCA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Signer issues a code-signing certificate for subject (valid from an hour ago for a day) and
// returns notation-go's signer for it, with the chain leaf → root.
func (ca NotationCA) Signer(t testing.TB, subject pkix.Name) notation.Signer {
	t.Helper()
	return ca.SignerValidUntil(t, subject, time.Now().Add(24*time.Hour))
}

// SignerValidUntil is Signer with a leaf certificate that expires at notAfter, for signatures made
// while the certificate was valid and verified after it expired.
func (ca NotationCA) SignerValidUntil(t testing.TB, subject pkix.Name, notAfter time.Time) notation.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signer.New(key, []*x509.Certificate{leaf, ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// NotationSign signs subject as `notation sign` does: notation-go makes the envelope (mediaType
// "application/jose+json" or "application/cose"; expiry 0: none) and pushes it through its registry
// client (oras-go) as an OCI 1.1 referrer, or under the referrers fallback tag on a registry
// without the referrers API. plainHTTP is for loopback test registries.
func NotationSign(t testing.TB, s notation.Signer, subject name.Digest, mediaType string, expiry time.Duration) {
	t.Helper()
	repo, err := remote.NewRepository(subject.Context().Name())
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = subject.Scheme() == "http"
	_, err = notation.Sign(context.Background(), s, notationregistry.NewRepository(repo), notation.SignOptions{
		ArtifactReference: subject.String(),
		SignerSignOptions: notation.SignerSignOptions{SignatureMediaType: mediaType, ExpiryDuration: expiry},
	})
	if err != nil {
		t.Fatalf("notation sign %s: %v", subject, err)
	}
}
