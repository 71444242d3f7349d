package verify

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/google/cel-go/cel"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Reasons an attestation requirement failed (AttestationResult.Reason).
const (
	// ReasonAttestationMissing: no attestation of the predicate type signed by the authority.
	ReasonAttestationMissing = "AttestationMissing"
	// ReasonAttestationConditionFailed: the attestation verified but its condition is false (or could
	// not be evaluated over the predicate, e.g. a missing field).
	ReasonAttestationConditionFailed = "AttestationConditionFailed"
	// ReasonAttestationInvalid: an attestation of the predicate type was found but cannot count: its
	// bundle does not verify with the authority (another signer, another digest as subject, a log
	// entry or timestamp that does not cover it) or its payload cannot be decoded.
	ReasonAttestationInvalid = "AttestationInvalid"
)

// CompileCondition compiles an attestation condition: a CEL expression
// (https://github.com/google/cel-spec) over the variable `predicate` (the statement's predicate as
// JSON) that must yield a bool. The RepositoryPolicy controller uses it to stall a policy whose
// condition does not compile.
func CompileCondition(expr string) (cel.Program, error) {
	env, err := cel.NewEnv(cel.Variable("predicate", cel.DynType))
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("condition %q: %w", expr, iss.Err())
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("condition %q yields %s, want bool", expr, ast.OutputType())
	}
	return env.Program(ast, cel.CostLimit(1_000_000))
}

// attestation is a compiled attestation requirement.
type attestation struct {
	name, predicateType string
	authority           int // index into Verifier.authorities
	condition           cel.Program
	expr                string
}

// AttestationResult is the outcome of one attestation requirement for a digest.
type AttestationResult struct {
	// Name of the requirement; PredicateType it asked for; Authority that must have signed it.
	Name, PredicateType, Authority string
	// Verified is true when a signed attestation of the type satisfied the condition.
	Verified bool
	// Reason and Message explain a failure (Reason* constants).
	Reason, Message string
}

// statement is the part of an in-toto statement (https://github.com/in-toto/attestation) we read.
type statement struct {
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

// checkAttestation finds, among atts (legacy `.att` format) and bundles (sigstore bundles read from
// referrers), one signed by the requirement's authority, of its predicate type, whose statement names
// this digest as a subject and whose condition holds. A bundle whose payload cannot be decoded, or
// one of the predicate type that does not verify, is reported (AttestationInvalid), never ignored.
func (v *Verifier) checkAttestation(ctx context.Context, req attestation, atts []oci.Signature, bundles []foundBundle, h v1.Hash) AttestationResult {
	a := v.authorities[req.authority]
	r := AttestationResult{Name: req.name, PredicateType: req.predicateType, Authority: a.name,
		Reason: ReasonAttestationMissing, Message: fmt.Sprintf("no attestation of type %s signed by %s", req.predicateType, a.name)}
	if a.tlogUnverifiable() {
		r.Reason, r.Message = ReasonTransparencyLogUnverifiable, "the authority requires a transparency-log entry, which a key authority verifies only with key.trustedRootRef (the log's keys); set it, or ignoreTransparencyLog: true"
		return r
	}
	co := a.checkOpts(cosign.IntotoSubjectClaimVerifier)
	for _, att := range atts {
		st, err := readStatement(att)
		if err != nil || st.PredicateType != req.predicateType {
			continue
		}
		one, err := mutate.AppendSignatures(empty.Signatures(), false, att)
		if err != nil {
			continue
		}
		if ok, _, err := cosign.VerifyImageAttestation(ctx, one, h, co); err != nil || len(ok) == 0 {
			continue
		}
		if req.evaluate(ctx, st, &r) {
			return r
		}
	}
	for _, b := range bundles {
		if b.problem != "" {
			if r.Reason == ReasonAttestationMissing {
				r.Reason, r.Message = ReasonAttestationInvalid, "an attestation bundle cannot be used: "+b.problem
			}
			continue
		}
		if b.statement == nil || b.statement.PredicateType != req.predicateType {
			continue
		}
		if _, err := a.bundle.verify(b, h); err != nil {
			f := classifyBundleFailure(a.keyless != nil, err)
			switch f.reason {
			case ReasonKeyMismatch, ReasonIdentityMismatch, ReasonSignatureInvalid, ReasonCertificateUntrusted, ReasonCertificateMissing:
				// signed by someone else: for this authority, still missing
				if r.Reason == ReasonAttestationMissing {
					r.Message = fmt.Sprintf("no attestation of type %s signed by %s (one found is not theirs: %s)", req.predicateType, a.name, f.reason)
				}
			default: // the authority's, but it does not hold for this digest (subject, log, time)
				if r.Reason == ReasonAttestationMissing {
					r.Reason, r.Message = ReasonAttestationInvalid, fmt.Sprintf("an attestation bundle of type %s does not verify (%s): %s", req.predicateType, f.reason, f.message)
				}
			}
			continue
		}
		if req.evaluate(ctx, *b.statement, &r) {
			return r
		}
	}
	return r
}

// evaluate applies the requirement's condition to a verified statement: true (and r verified) when
// it holds; otherwise r says why.
func (req attestation) evaluate(ctx context.Context, st statement, r *AttestationResult) bool {
	if req.condition == nil {
		r.Verified, r.Reason, r.Message = true, "", ""
		return true
	}
	var pred any
	if err := json.Unmarshal(st.Predicate, &pred); err != nil {
		r.Reason, r.Message = ReasonAttestationConditionFailed, "the predicate is not JSON"
		return false
	}
	out, _, err := req.condition.ContextEval(ctx, map[string]any{"predicate": pred})
	switch {
	case err != nil:
		r.Reason, r.Message = ReasonAttestationConditionFailed, fmt.Sprintf("condition %q: %v", req.expr, err)
	case out.Value() != true:
		r.Reason, r.Message = ReasonAttestationConditionFailed, fmt.Sprintf("condition %q is %v", req.expr, out.Value())
	default:
		r.Verified, r.Reason, r.Message = true, "", ""
		return true
	}
	return false
}

// readStatement decodes the in-toto statement inside an attestation's DSSE envelope.
func readStatement(att oci.Signature) (statement, error) {
	var st statement
	p, err := att.Payload()
	if err != nil {
		return st, err
	}
	var env struct {
		Payload string `json:"payload"`
	}
	if err := json.Unmarshal(p, &env); err != nil {
		return st, err
	}
	raw, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(raw, &st)
}

// compileAttestations compiles the spec's attestation requirements against the authorities.
func (v *Verifier) compileAttestations(reqs []v1alpha1.AttestationRequirement) error {
	for _, req := range reqs {
		idx := -1
		for i, a := range v.authorities {
			if a.name == req.Authority {
				idx = i
			}
		}
		if idx < 0 {
			return fmt.Errorf("attestation %q names the unknown authority %q", req.Name, req.Authority)
		}
		if v.authorities[idx].notation != nil {
			return fmt.Errorf("attestation %q names the notation authority %q: attestations are verified with cosign authorities (key or keyless)", req.Name, req.Authority)
		}
		c := attestation{name: req.Name, predicateType: req.PredicateType, authority: idx, expr: req.Condition}
		if req.Condition != "" {
			prg, err := CompileCondition(req.Condition)
			if err != nil {
				return fmt.Errorf("attestation %q: %w", req.Name, err)
			}
			c.condition = prg
		}
		v.attestations = append(v.attestations, c)
	}
	return nil
}
