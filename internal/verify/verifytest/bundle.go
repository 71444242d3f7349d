package verifytest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	intotov1 "github.com/in-toto/attestation/go/v1"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// CosignSignPredicateType is the predicate type cosign v3 signs images with in the bundle format.
const CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"

// BundleSigner signs as cosign v3 does by default (`cosign sign`/`cosign attest` with the bundle
// format): sigstore-go's signer, a sigstore bundle v0.3 stored by cosign's own writer as an OCI 1.1
// referrer of the image (through the referrers fallback tag `sha256-<hex>` on registries without the
// referrers API). No timestamp; no transparency log unless Logs is set (the tests' authorities
// otherwise set ignoreTransparencyLog).
type BundleSigner struct {
	// Keypair signs (an ECDSA P-256 key, as `cosign generate-key-pair` makes).
	Keypair sign.Keypair
	// PublicPEM is its public key, as in cosign.pub.
	PublicPEM []byte
	// Certificates, when set, makes keyless bundles: it issues the certificate (Fulcio's role).
	Certificates sign.CertificateProvider
	// Logs, when set, record each bundle in these transparency logs (`cosign sign --key` with
	// Rekor): sigstore-go's own sign.Rekor with an injected client.
	Logs []sign.Transparency
}

// NewBundleSigner makes a signer with a fresh ECDSA P-256 key.
func NewBundleSigner(t testing.TB) BundleSigner {
	t.Helper()
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.GetPublicKeyPem()
	if err != nil {
		t.Fatal(err)
	}
	return BundleSigner{Keypair: kp, PublicPEM: []byte(pub)}
}

// Statement is an in-toto statement (v1) naming digests (`sha256:<hex>`) as subjects.
func Statement(predicateType string, predicate map[string]any, digests ...string) ([]byte, error) {
	pred, err := structpb.NewStruct(predicate)
	if err != nil {
		return nil, err
	}
	st := &intotov1.Statement{Type: intotov1.StatementTypeUri, PredicateType: predicateType, Predicate: pred}
	for _, d := range digests {
		alg, hexDigest, ok := strings.Cut(d, ":")
		if !ok {
			return nil, fmt.Errorf("digest %q", d)
		}
		st.Subject = append(st.Subject, &intotov1.ResourceDescriptor{Digest: map[string]string{alg: hexDigest}})
	}
	return protojson.Marshal(st)
}

// SignBundle signs subject as `cosign sign` v3 does: a DSSE bundle of an in-toto statement with
// predicate type CosignSignPredicateType and subject's digest, attached as a referrer.
func (s BundleSigner) SignBundle(t testing.TB, subject name.Digest, opts ...ociremote.Option) {
	t.Helper()
	s.Attest(t, subject, CosignSignPredicateType, map[string]any{}, opts...)
}

// Attest attaches a DSSE bundle of an in-toto statement of predicateType about subject, as
// `cosign attest` v3 does.
func (s BundleSigner) Attest(t testing.TB, subject name.Digest, predicateType string, predicate map[string]any, opts ...ociremote.Option) {
	t.Helper()
	st, err := Statement(predicateType, predicate, subject.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	s.AttestStatement(t, subject, predicateType, st, opts...)
}

// AttestStatement signs the given statement bytes (which may name other subjects, or not parse)
// and attaches the bundle to subject, annotated with predicateType.
func (s BundleSigner) AttestStatement(t testing.TB, subject name.Digest, predicateType string, statement []byte, opts ...ociremote.Option) {
	t.Helper()
	if err := s.WriteDSSE(subject, predicateType, statement, opts...); err != nil {
		t.Fatal(err)
	}
}

// SignImageBundle is SignBundle outside tests (the demo signs a seeded image with it).
func (s BundleSigner) SignImageBundle(subject name.Digest, opts ...ociremote.Option) error {
	st, err := Statement(CosignSignPredicateType, map[string]any{}, subject.DigestStr())
	if err != nil {
		return err
	}
	return s.WriteDSSE(subject, CosignSignPredicateType, st, opts...)
}

// WriteDSSE signs statement into a DSSE bundle and attaches it to subject with cosign's writer.
func (s BundleSigner) WriteDSSE(subject name.Digest, predicateType string, statement []byte, opts ...ociremote.Option) error {
	b, err := s.makeBundle(&sign.DSSEData{Data: statement, PayloadType: "application/vnd.in-toto+json"})
	if err != nil {
		return err
	}
	return ociremote.WriteAttestationNewBundleFormat(subject, b, predicateType, opts...)
}

// SignMessage attaches a message-signature bundle over the manifest bytes whose digest subject is
// (the bundle's message digest is then the image digest).
func (s BundleSigner) SignMessage(t testing.TB, subject name.Digest, manifest []byte, opts ...ociremote.Option) {
	t.Helper()
	if sum := sha256.Sum256(manifest); "sha256:"+hex.EncodeToString(sum[:]) != subject.DigestStr() {
		t.Fatalf("the manifest bytes are not %s", subject.DigestStr())
	}
	b, err := s.makeBundle(&sign.PlainData{Data: manifest})
	if err != nil {
		t.Fatal(err)
	}
	if err := ociremote.WriteAttestationNewBundleFormat(subject, b, "", opts...); err != nil {
		t.Fatal(err)
	}
}

// DSSEBundle is the JSON sigstore bundle of a DSSE envelope over the in-toto statement.
func (s BundleSigner) DSSEBundle(t testing.TB, statement []byte) []byte {
	t.Helper()
	b, err := s.makeBundle(&sign.DSSEData{Data: statement, PayloadType: "application/vnd.in-toto+json"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s BundleSigner) makeBundle(content sign.Content) ([]byte, error) {
	pb, err := sign.Bundle(content, s.Keypair, sign.BundleOptions{CertificateProvider: s.Certificates, TransparencyLogs: s.Logs, Context: context.Background()})
	if err != nil {
		return nil, err
	}
	return protojson.Marshal(pb)
}

// ECDSAKeypair is sigstore-go's sign.Keypair for an existing ECDSA P-256 key (what cosign v3 does
// with `--key cosign.key`): SHA-256 digests, ASN.1 signatures, the key's SHA-256 fingerprint as hint.
type ECDSAKeypair struct{ Key *ecdsa.PrivateKey }

var _ sign.Keypair = ECDSAKeypair{}

// GetHashAlgorithm is SHA2-256.
func (k ECDSAKeypair) GetHashAlgorithm() protocommon.HashAlgorithm {
	return protocommon.HashAlgorithm_SHA2_256
}

// GetSigningAlgorithm is ECDSA P-256 with SHA-256.
func (k ECDSAKeypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256
}

// GetHint is the base64 SHA-256 of the public key's PKIX DER.
func (k ECDSAKeypair) GetHint() []byte {
	der, _ := x509.MarshalPKIXPublicKey(k.Key.Public())
	sum := sha256.Sum256(der)
	return []byte(base64.StdEncoding.EncodeToString(sum[:]))
}

// GetKeyAlgorithm is "ECDSA".
func (k ECDSAKeypair) GetKeyAlgorithm() string { return "ECDSA" }

// GetPublicKey is the public half.
func (k ECDSAKeypair) GetPublicKey() crypto.PublicKey { return k.Key.Public() }

// GetPublicKeyPem is the public key as PEM.
func (k ECDSAKeypair) GetPublicKeyPem() (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k.Key.Public())
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// SignData signs the SHA-256 digest of data and returns the signature and the digest.
func (k ECDSAKeypair) SignData(_ context.Context, data []byte) ([]byte, []byte, error) {
	sum := sha256.Sum256(data)
	sig, err := k.Key.Sign(rand.Reader, sum[:], crypto.SHA256)
	return sig, sum[:], err
}
