package verifytest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
)

// TrustedRootJSON is a sigstore trusted_root.json
// (https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_trustroot.proto) with the
// given certificate authorities, timestamp authorities and transparency logs (any may be nil).
func TrustedRootJSON(t testing.TB, cas []root.CertificateAuthority, tsas []root.TimestampingAuthority, logs map[string]*root.TransparencyLog) []byte {
	t.Helper()
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, nil, tsas, logs)
	if err != nil {
		t.Fatal(err)
	}
	data, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TransparencyLog is a trusted root's entry for a Rekor log whose key is pub: its log ID is the
// SHA-256 of the PKIX public key, valid from two days ago.
func TransparencyLog(t testing.TB, pub *ecdsa.PublicKey) map[string]*root.TransparencyLog {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	id := sha256.Sum256(der)
	return map[string]*root.TransparencyLog{hex.EncodeToString(id[:]): {BaseURL: "https://rekor.test", ID: id[:],
		ValidityPeriodStart: time.Now().Add(-48 * time.Hour), HashFunc: crypto.SHA256, PublicKey: pub, SignatureHashFunc: crypto.SHA256}}
}
