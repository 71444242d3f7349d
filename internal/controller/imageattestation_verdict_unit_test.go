package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/verify"
)

// TestFailureReasons: only what made a result fail is listed: failing authorities only while fewer
// than `require` verified, every failing attestation, and failing platforms of an index.
func TestFailureReasons(t *testing.T) {
	two := &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "a"}, {Name: "b"}}}
	oneOfTwo := &v1alpha1.VerificationSpec{Authorities: two.Authorities, Require: ptr(int32(1))}
	indexOnly := &v1alpha1.VerificationSpec{Authorities: two.Authorities, IndexPolicy: v1alpha1.IndexPolicyIndex}
	auth := func(ok bool, reason string) verify.AuthorityResult {
		return verify.AuthorityResult{Verified: ok, Reason: reason}
	}
	cases := []struct {
		name string
		spec *v1alpha1.VerificationSpec
		res  verify.ImageResult
		want string
	}{
		{"verified", two, verify.ImageResult{Result: verify.Result{Verified: true, Authorities: []verify.AuthorityResult{auth(true, ""), auth(true, "")}}}, ""},
		{"both authorities fail", two, verify.ImageResult{Result: verify.Result{Authorities: []verify.AuthorityResult{
			auth(false, verify.ReasonSignatureMissing), auth(false, verify.ReasonKeyMismatch)}}}, "KeyMismatch,SignatureMissing"},
		{"one of two required, attestation fails", oneOfTwo, verify.ImageResult{Result: verify.Result{
			Authorities:  []verify.AuthorityResult{auth(true, ""), auth(false, verify.ReasonKeyMismatch)},
			Attestations: []verify.AttestationResult{{Reason: verify.ReasonAttestationConditionFailed}}}}, "AttestationConditionFailed"},
		{"index: a failing platform", two, verify.ImageResult{
			Result: verify.Result{Authorities: []verify.AuthorityResult{auth(false, verify.ReasonSignatureMissing), auth(false, verify.ReasonSignatureMissing)}},
			Platforms: []verify.PlatformResult{
				{Platform: "linux/amd64", Result: verify.Result{Verified: true}},
				{Platform: "linux/arm64", Result: verify.Result{Authorities: []verify.AuthorityResult{auth(true, ""), auth(false, verify.ReasonSignatureInvalid)}}},
			}}, "SignatureInvalid,SignatureMissing"},
		{"index policy Index: the platforms only inform", indexOnly, verify.ImageResult{
			Result: verify.Result{Authorities: []verify.AuthorityResult{auth(false, verify.ReasonSignatureMissing), auth(false, verify.ReasonSignatureMissing)}},
			Platforms: []verify.PlatformResult{
				{Platform: "linux/arm64", Result: verify.Result{Authorities: []verify.AuthorityResult{auth(true, ""), auth(false, verify.ReasonSignatureInvalid)}}},
			}}, "SignatureMissing"},
	}
	for _, tc := range cases {
		if got := strings.Join(failureReasons(tc.res, tc.spec), ","); got != tc.want {
			t.Errorf("%s: reasons %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestEvaluateCondition: PolicyCompliant takes the first failing policy's first reason, lists every
// policy in its message, and is Unknown without a selecting policy.
func TestEvaluateCondition(t *testing.T) {
	sign := &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "k"}}}
	scanning := &v1alpha1.ScanningSpec{Secrets: &v1alpha1.SecretThreshold{}}
	pols := []v1alpha1.RepositoryPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "a-open", Generation: 3}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b-signed", Generation: 1}, Spec: v1alpha1.RepositoryPolicySpec{Verification: sign, Scanning: scanning}},
	}
	ia := &v1alpha1.ImageAttestation{}
	sigs := map[string]*policy.SignatureOutcome{"b-signed": {Reasons: []string{verify.ReasonSignatureMissing}}}
	summary := evaluate(ia, pols, sigs, &scanRecord{secrets: 2}, policy.ScanDone, time.Now())
	c := findCondition(ia, v1alpha1.PolicyCompliantCondition)
	if c.Status != metav1.ConditionFalse || c.Reason != policy.ReasonSecretFound ||
		c.Message != "a-open: compliant; b-signed: SecretFound, SignatureMissing (2 exposed secrets)" {
		t.Errorf("condition %+v", c)
	}
	if summary != "verdict is current: fails 1 of 2 policies" {
		t.Errorf("summary %q", summary)
	}
	if len(ia.Status.Policies) != 2 || !ia.Status.Policies[0].Compliant || ia.Status.Policies[0].ObservedGeneration != 3 ||
		!slices.Equal(ia.Status.Policies[1].Reasons, []string{"SecretFound", "SignatureMissing"}) {
		t.Errorf("status.policies %+v", ia.Status.Policies)
	}

	// The scan failed before any succeeded: the policy with thresholds fails with ScanFailed.
	evaluate(ia, pols[1:], map[string]*policy.SignatureOutcome{"b-signed": {Verified: true}}, nil, policy.ScanFailedState, time.Now())
	if c := findCondition(ia, v1alpha1.PolicyCompliantCondition); c.Reason != policy.ReasonScanFailed {
		t.Errorf("after a failed scan: %+v", c)
	}
	// A failing policy past the 64 that status.policies holds still fails the image.
	var many []v1alpha1.RepositoryPolicy
	for i := range 65 {
		many = append(many, v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%02d", i)}})
	}
	many[64].Spec.Verification = sign
	evaluate(ia, many, nil, &scanRecord{}, policy.ScanDone, time.Now())
	if c := findCondition(ia, v1alpha1.PolicyCompliantCondition); c.Status != metav1.ConditionFalse || c.Reason != policy.ReasonNotVerified || len(ia.Status.Policies) != 64 {
		t.Errorf("65 policies, the last failing: %+v (%d results)", c, len(ia.Status.Policies))
	}
	evaluate(ia, nil, nil, nil, policy.ScanDone, time.Now())
	if c := findCondition(ia, v1alpha1.PolicyCompliantCondition); c.Status != metav1.ConditionUnknown || c.Reason != noPolicyReason {
		t.Errorf("without a policy: %+v", c)
	}
}
