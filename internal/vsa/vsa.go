// Package vsa signs Portcullis's verdicts as in-toto attestations with a SLSA verification summary
// predicate (https://slsa.dev/spec/v1.0/verification_summary) and pushes them to the registry as
// cosign attestations of the image (the `sha256-<hex>.att` tag, a DSSE envelope per layer, as
// `cosign attest` writes them), so admission controllers that verify cosign attestations (Kyverno
// verifyImages, Sigstore policy-controller) can admit on a Portcullis verdict. Signing and writing
// use cosign's and sigstore's libraries.
package vsa

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	vsav1 "github.com/in-toto/attestation/go/predicates/vsa/v1"
	intotov1 "github.com/in-toto/attestation/go/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// PredicateType is SLSA's verification summary, version 1.
	PredicateType = "https://slsa.dev/verification_summary/v1"
	// DefaultVerifierID is the predicate's verifier.id when the policy names none.
	DefaultVerifierID = "https://portcullis.dev/verifier"
	// PolicyAnnotation, on the attestation's layer, names the RepositoryPolicy
	// (namespace/name) whose verdict it carries: a newer verdict of the same policy replaces it, and
	// other attestations (other policies', other tools') are kept.
	PolicyAnnotation = "dev.portcullis/policy"
	// ReasonsAnnotation, on the layer, lists the verdict's reasons (comma-separated), which the
	// SLSA predicate has no field for.
	ReasonsAnnotation = "dev.portcullis/reasons"
)

// Verdict is one policy's verdict on one image.
type Verdict struct {
	// Image is the image by digest.
	Image name.Digest
	// Policy is the RepositoryPolicy's namespace/name and Generation its generation.
	Policy     string
	Generation int64
	// Passed is the verdict; Reasons why it failed.
	Passed  bool
	Reasons []string
	// VerifierID is the predicate's verifier.id (DefaultVerifierID when empty); Version the
	// verifier's version.
	VerifierID, Version string
	// Time is when the verdict was reached.
	Time time.Time
}

// Statement is v's in-toto statement (v1) with a SLSA verification summary predicate: the subject
// is the image, resourceUri its oci:// reference, policy.uri the RepositoryPolicy with its
// generation, verificationResult PASSED or FAILED.
func Statement(v Verdict) ([]byte, error) {
	alg, hexDigest, ok := strings.Cut(v.Image.DigestStr(), ":")
	if !ok {
		return nil, fmt.Errorf("%s: not a digest reference", v.Image)
	}
	id := v.VerifierID
	if id == "" {
		id = DefaultVerifierID
	}
	result := "FAILED"
	if v.Passed {
		result = "PASSED"
	}
	pred := &vsav1.VerificationSummary{
		Verifier:           &vsav1.VerificationSummary_Verifier{Id: id},
		TimeVerified:       timestamppb.New(v.Time.UTC().Truncate(time.Second)),
		ResourceUri:        "oci://" + v.Image.String(),
		Policy:             &vsav1.VerificationSummary_Policy{Uri: fmt.Sprintf("k8s://repositorypolicies.registry.portcullis.dev/%s?generation=%d", v.Policy, v.Generation)},
		VerificationResult: result,
		SlsaVersion:        "1.0",
	}
	raw, err := protojson.Marshal(pred)
	if err != nil {
		return nil, err
	}
	st := &structpb.Struct{}
	if err := protojson.Unmarshal(raw, st); err != nil {
		return nil, err
	}
	if v.Version != "" {
		st.Fields["verifier"].GetStructValue().Fields["version"] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"portcullis": structpb.NewStringValue(v.Version)}})
	}
	if _, err := hex.DecodeString(hexDigest); err != nil {
		return nil, fmt.Errorf("%s: %w", v.Image, err)
	}
	s := &intotov1.Statement{
		Type:          intotov1.StatementTypeUri,
		Subject:       []*intotov1.ResourceDescriptor{{Name: v.Image.Context().Name(), Digest: map[string]string{alg: hexDigest}}},
		PredicateType: PredicateType,
		Predicate:     st,
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return protojson.Marshal(s)
}

// LoadSigner reads a signing key: an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC 1: ECDSA,
// Ed25519 or RSA), or a key `cosign generate-key-pair` wrote (encrypted; password is its password).
// The error never holds key material.
func LoadSigner(key, password []byte) (signature.SignerVerifier, error) {
	if bytes.Contains(key, []byte("ENCRYPTED SIGSTORE PRIVATE KEY")) || bytes.Contains(key, []byte("ENCRYPTED COSIGN PRIVATE KEY")) {
		sv, err := cosign.LoadPrivateKey(key, password, nil)
		if err != nil {
			return nil, fmt.Errorf("the cosign key does not open with the password given (%T)", err)
		}
		return sv, nil
	}
	pk, err := cryptoutils.UnmarshalPEMToPrivateKey(key, cryptoutils.SkipPassword)
	if err != nil {
		return nil, fmt.Errorf("not a PEM private key (PKCS#8, PKCS#1 or SEC 1) or a cosign key")
	}
	sv, err := signature.LoadSignerVerifier(pk, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("unsupported private key: %w", err)
	}
	return sv, nil
}

// Push signs v's statement with sv (a DSSE envelope, payload type application/vnd.in-toto+json)
// and writes it as a cosign attestation of v.Image with opts: the `.att` manifest keeps every other
// attestation and loses only the one this policy wrote before.
func Push(ctx context.Context, v Verdict, sv signature.SignerVerifier, opts ...remote.Option) error {
	payload, err := Statement(v)
	if err != nil {
		return err
	}
	envelope, err := dsse.WrapSigner(sv, ctypes.IntotoPayloadType).SignMessage(bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("signing the verdict: %w", err)
	}
	ann := map[string]string{"predicateType": PredicateType, PolicyAnnotation: v.Policy}
	if len(v.Reasons) > 0 {
		ann[ReasonsAnnotation] = strings.Join(v.Reasons, ",")
	}
	att, err := static.NewAttestation(envelope, static.WithLayerMediaType(ctypes.DssePayloadType), static.WithAnnotations(ann))
	if err != nil {
		return err
	}
	ro := []ociremote.Option{ociremote.WithRemoteOptions(append([]remote.Option{remote.WithContext(ctx)}, opts...)...)}
	se, err := ociremote.SignedEntity(v.Image, ro...)
	if err != nil {
		return fmt.Errorf("reading %s: %w", v.Image, err)
	}
	se, err = mutate.AttachAttestationToEntity(se, att, mutate.WithReplaceOp(replacePolicy{v.Policy}))
	if err != nil {
		return err
	}
	if err := ociremote.WriteAttestations(v.Image.Context(), se, ro...); err != nil {
		return fmt.Errorf("writing the verdict attestation of %s: %w", v.Image, err)
	}
	return nil
}

// replacePolicy drops the attestations a policy wrote before (PolicyAnnotation) and keeps the rest.
type replacePolicy struct{ policy string }

func (r replacePolicy) Replace(existing oci.Signatures, att oci.Signature) (oci.Signatures, error) {
	sigs, err := existing.Get()
	if err != nil {
		return nil, err
	}
	kept := make([]oci.Signature, 0, len(sigs)+1)
	for _, s := range sigs {
		ann, err := s.Annotations()
		if err != nil {
			return nil, err
		}
		if ann[PolicyAnnotation] != r.policy {
			kept = append(kept, s)
		}
	}
	return mutate.AppendSignatures(empty.Signatures(), false, append(kept, att)...)
}
