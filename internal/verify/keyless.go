package verify

import (
	"fmt"
	"regexp"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// keyless is a compiled keyless authority: an expected identity and the trusted root to check
// certificates (and, unless ignored, SCTs and transparency-log entries) against.
type keyless struct {
	identity      cosign.Identity
	trust         *root.TrustedRoot
	ignoreSCT     bool
	useTimestamps bool
}

// compileKeyless parses the trusted root (sigstore `trusted_root.json`,
// https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_trustroot.proto) and checks the
// subject expression (RE2, matched in full).
func compileKeyless(k *v1alpha1.KeylessAuthority, trustedRootJSON []byte) (*keyless, error) {
	tr, err := root.NewTrustedRootFromJSON(trustedRootJSON)
	if err != nil {
		return nil, fmt.Errorf("parsing the trusted root: %w", err)
	}
	id := cosign.Identity{Issuer: k.Issuer, Subject: k.Subject}
	if k.SubjectRegExp != "" {
		if _, err := regexp.Compile(k.SubjectRegExp); err != nil {
			return nil, fmt.Errorf("subjectRegExp: %w", err)
		}
		id.SubjectRegExp = "^(?:" + k.SubjectRegExp + ")$"
	}
	return &keyless{identity: id, trust: tr, ignoreSCT: k.IgnoreSCT, useTimestamps: k.UseSignedTimestamps}, nil
}

func (k *keyless) apply(co *cosign.CheckOpts) {
	co.TrustedMaterial = k.trust
	co.Identities = []cosign.Identity{k.identity}
	co.IgnoreSCT = k.ignoreSCT
	co.UseSignedTimestamps = k.useTimestamps
}

// signerOf returns the certificate identity (first SAN) and OIDC issuer of a keyless signature.
func signerOf(sig oci.Signature) (subject, issuer string) {
	cert, err := sig.Cert()
	if err != nil || cert == nil {
		return "", ""
	}
	if sans := cryptoutils.GetSubjectAlternateNames(cert); len(sans) > 0 {
		subject = sans[0]
	}
	return subject, (&cosign.CertExtensions{Cert: cert}).GetIssuer()
}
