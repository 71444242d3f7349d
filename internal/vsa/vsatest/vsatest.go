// Package vsatest reads verdict attestations back the way Kyverno and Sigstore policy-controller
// do: verified with cosign's library and the public key (no transparency log), then decoded.
package vsatest

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/portcullis-dev/portcullis/internal/vsa"
)

// Verdict is one verified verdict attestation.
type Verdict struct {
	// Type is the statement's _type, PredicateType its predicate type.
	Type, PredicateType string
	// SubjectName and SubjectDigest are the statement's one subject (digest: the sha256 hex).
	SubjectName, SubjectDigest string
	// Result is verificationResult; PolicyURI policy.uri; ResourceURI resourceUri; VerifierID
	// verifier.id.
	Result, PolicyURI, ResourceURI, VerifierID string
	// Reasons is the layer's vsa.ReasonsAnnotation.
	Reasons string
}

// Read verifies ref's cosign attestations with pub and returns the verdict attestations by their
// policy (vsa.PolicyAnnotation). opts reach the registry (auth, transport).
func Read(ctx context.Context, ref name.Digest, pub crypto.PublicKey, opts ...remote.Option) (map[string]Verdict, error) {
	verifier, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	co := &cosign.CheckOpts{SigVerifier: verifier, IgnoreTlog: true, ClaimVerifier: cosign.IntotoSubjectClaimVerifier,
		RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(append([]remote.Option{remote.WithContext(ctx)}, opts...)...)}}
	atts, _, err := cosign.VerifyImageAttestations(ctx, ref, co)
	if err != nil {
		return nil, err
	}
	out := map[string]Verdict{}
	for _, a := range atts {
		ann, err := a.Annotations()
		if err != nil {
			return nil, err
		}
		raw, err := a.Payload()
		if err != nil {
			return nil, err
		}
		var env struct{ Payload string }
		if err := json.Unmarshal(raw, &env); err != nil {
			return nil, fmt.Errorf("not a DSSE envelope: %w", err)
		}
		body, err := base64.StdEncoding.DecodeString(env.Payload)
		if err != nil {
			return nil, err
		}
		var st struct {
			Type          string `json:"_type"`
			PredicateType string `json:"predicateType"`
			Subject       []struct {
				Name   string            `json:"name"`
				Digest map[string]string `json:"digest"`
			} `json:"subject"`
			Predicate struct {
				Verifier struct {
					ID string `json:"id"`
				} `json:"verifier"`
				ResourceURI        string `json:"resourceUri"`
				VerificationResult string `json:"verificationResult"`
				Policy             struct {
					URI string `json:"uri"`
				} `json:"policy"`
			} `json:"predicate"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			return nil, fmt.Errorf("not an in-toto statement: %w", err)
		}
		v := Verdict{Type: st.Type, PredicateType: st.PredicateType, Result: st.Predicate.VerificationResult, PolicyURI: st.Predicate.Policy.URI,
			ResourceURI: st.Predicate.ResourceURI, VerifierID: st.Predicate.Verifier.ID, Reasons: ann[vsa.ReasonsAnnotation]}
		if len(st.Subject) == 1 {
			v.SubjectName, v.SubjectDigest = st.Subject[0].Name, st.Subject[0].Digest["sha256"]
		}
		out[ann[vsa.PolicyAnnotation]] = v
	}
	return out, nil
}
