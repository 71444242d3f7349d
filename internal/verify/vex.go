package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
)

// OpenVEX documents (https://github.com/openvex/spec) attached to an image as in-toto attestations:
// `cosign attest --type openvex` writes the predicate type "https://openvex.dev/ns", vexctl
// "https://openvex.dev/ns/v0.2.0"; every predicate type starting with OpenVEXPredicatePrefix is one.
const (
	OpenVEXPredicatePrefix = "https://openvex.dev/ns"
	// maxVEXDocuments bounds the VEX documents kept per digest, maxVEXBytes each one's size.
	maxVEXDocuments = 16
	maxVEXBytes     = 512 << 10
)

// VEXDocument is an OpenVEX document whose attestation verified with a VEX authority for the digest.
type VEXDocument struct {
	// Source is the digest of the attestation that carried it: a sigstore bundle referrer's
	// manifest, or the layer of a legacy `.att` attestation.
	Source string
	// Authority is the name of the authority that signed it.
	Authority string
	// Document is the OpenVEX JSON (the in-toto statement's predicate).
	Document json.RawMessage
}

// WithVEX makes Verify also collect the OpenVEX attestations signed by the named authorities (a
// policy's spec.scanning.vex.authorities) into Result.VEX, and list the others in Result.VEXIgnored.
// It fails when a name is not a cosign authority of the verifier.
func (v *Verifier) WithVEX(authorities []string) error {
	v.vex = nil
	for _, n := range authorities {
		idx := -1
		for i, a := range v.authorities {
			if a.name == n && a.notation == nil {
				idx = i
			}
		}
		if idx < 0 {
			return fmt.Errorf("scanning.vex names %q, which is not a cosign authority (key or keyless) of verification.authorities", n)
		}
		v.vex = append(v.vex, idx)
	}
	return nil
}

// collectVEX returns the OpenVEX documents among atts (legacy format) and bundles that a VEX
// authority signed for digest h, and why each other one is ignored.
func (v *Verifier) collectVEX(ctx context.Context, atts []oci.Signature, bundles []foundBundle, h v1.Hash) (docs []VEXDocument, ignored []string) {
	names := make([]string, 0, len(v.vex))
	for _, i := range v.vex {
		names = append(names, v.authorities[i].name)
	}
	notSigned := fmt.Sprintf("not signed for this digest by a VEX authority (%s)", strings.Join(names, ", "))
	keep := func(source, authority string, predicate json.RawMessage) {
		switch {
		case len(docs) >= maxVEXDocuments:
			ignored = append(ignored, source+": over the limit of 16 VEX documents per image")
		case len(predicate) > maxVEXBytes:
			ignored = append(ignored, fmt.Sprintf("%s: %d bytes, over the %d-byte limit", source, len(predicate), maxVEXBytes))
		default:
			docs = append(docs, VEXDocument{Source: source, Authority: authority, Document: predicate})
		}
	}
	for _, att := range atts {
		st, err := readStatement(att)
		if err != nil || !strings.HasPrefix(st.PredicateType, OpenVEXPredicatePrefix) {
			continue
		}
		source := "attestation"
		if d, err := att.Digest(); err == nil {
			source = d.String()
		}
		one, err := mutate.AppendSignatures(empty.Signatures(), false, att)
		if err != nil {
			continue
		}
		by := ""
		for _, i := range v.vex {
			a := v.authorities[i]
			if a.tlogUnverifiable() {
				continue
			}
			if ok, _, err := cosign.VerifyImageAttestation(ctx, one, h, a.checkOpts(cosign.IntotoSubjectClaimVerifier)); err == nil && len(ok) > 0 {
				by = a.name
				break
			}
		}
		if by == "" {
			ignored = append(ignored, source+": "+notSigned)
			continue
		}
		keep(source, by, st.Predicate)
	}
	for _, b := range bundles {
		if b.problem != "" || b.statement == nil || !strings.HasPrefix(b.statement.PredicateType, OpenVEXPredicatePrefix) {
			continue
		}
		by := ""
		for _, i := range v.vex {
			a := v.authorities[i]
			if a.tlogUnverifiable() {
				continue
			}
			if _, err := a.bundle.verify(b, h); err == nil {
				by = a.name
				break
			}
		}
		if by == "" {
			ignored = append(ignored, b.manifest+": "+notSigned)
			continue
		}
		keep(b.manifest, by, b.statement.Predicate)
	}
	return docs, ignored
}
