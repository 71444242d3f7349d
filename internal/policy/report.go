package policy

import (
	"slices"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Report results of one (image, policy) pair, as the PolicyReport formats spell them (OpenReports
// openreports.io/v1alpha1 and wg-policy wgpolicyk8s.io/v1alpha2 share the enum: pass, fail, warn,
// error, skip).
const (
	// ResultPass: the image passes the policy.
	ResultPass = "pass"
	// ResultFail: the image fails a policy in Enforce mode (admission refuses it).
	ResultFail = "fail"
	// ResultWarn: the image fails a policy in Audit mode (reported, not refused).
	ResultWarn = "warn"
	// ResultError: the policy could not be evaluated (the scan failed, the policy is invalid).
	ResultError = "error"
	// ResultSkip: not evaluated yet (verification or scan pending).
	ResultSkip = "skip"
)

// ReportResult is the PolicyReport result of a policy's verdict for an image: pass when compliant;
// when not, fail (Enforce) or warn (Audit) for any reason that is a finding, error when the only
// reasons are that the policy could not be evaluated (ScanFailed, PolicyInvalid), skip when they
// are only that the evaluation is pending (NotVerified, NotScanned).
func ReportResult(mode v1alpha1.PolicyMode, compliant bool, reasons []string) string {
	if compliant {
		return ResultPass
	}
	pending := []string{ReasonNotVerified, ReasonNotScanned}
	failed := []string{ReasonScanFailed, ReasonPolicyInvalid}
	errored := false
	finding := len(reasons) == 0 // non-compliant with no reason given: a finding all the same
	for _, r := range reasons {
		switch {
		case slices.Contains(pending, r):
		case slices.Contains(failed, r):
			errored = true
		default:
			finding = true
		}
	}
	switch {
	case finding && mode == v1alpha1.ModeEnforce:
		return ResultFail
	case finding:
		return ResultWarn
	case errored:
		return ResultError
	}
	return ResultSkip
}
