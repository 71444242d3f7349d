package policy

import (
	"testing"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func TestReportResult(t *testing.T) {
	for _, c := range []struct {
		mode      v1alpha1.PolicyMode
		compliant bool
		reasons   []string
		want      string
	}{
		{v1alpha1.ModeEnforce, true, nil, ResultPass},
		{v1alpha1.ModeAudit, true, nil, ResultPass},
		{v1alpha1.ModeEnforce, false, []string{"SignatureMissing"}, ResultFail},
		{v1alpha1.ModeAudit, false, []string{"SignatureMissing"}, ResultWarn},
		{v1alpha1.ModeEnforce, false, []string{ReasonScanFailed}, ResultError},
		{v1alpha1.ModeAudit, false, []string{ReasonPolicyInvalid, ReasonNotScanned}, ResultError},
		{v1alpha1.ModeEnforce, false, []string{ReasonNotVerified, ReasonNotScanned}, ResultSkip},
		// A finding outweighs a scan that failed or is pending.
		{v1alpha1.ModeEnforce, false, []string{ReasonScanFailed, "KeyMismatch"}, ResultFail},
		{v1alpha1.ModeAudit, false, []string{ReasonNotScanned, ReasonVulnerabilityThresholdExceeded}, ResultWarn},
		{v1alpha1.ModeEnforce, false, nil, ResultFail},
	} {
		if got := ReportResult(c.mode, c.compliant, c.reasons); got != c.want {
			t.Errorf("ReportResult(%s, %t, %v) = %s; want %s", c.mode, c.compliant, c.reasons, got, c.want)
		}
	}
}
