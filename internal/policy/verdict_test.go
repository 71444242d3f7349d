package policy

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func TestEvaluate(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	verification := &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "ci"}}}
	scanning := &v1alpha1.ScanningSpec{
		Vulnerabilities:   &v1alpha1.VulnerabilityThresholds{MaxCritical: i32(0), MaxUnknown: i32(1)},
		Secrets:           &v1alpha1.SecretThreshold{},
		Misconfigurations: &v1alpha1.MisconfigurationThreshold{MaxSeverity: v1alpha1.SeverityMedium},
	}
	clean := Evidence{Signature: &SignatureOutcome{Verified: true}, Scan: ScanDone}
	with := func(f func(*Evidence)) Evidence { e := clean; f(&e); return e }
	cases := []struct {
		name    string
		spec    v1alpha1.RepositoryPolicySpec
		ev      Evidence
		reasons string
		details string
	}{
		{"clean image passes", v1alpha1.RepositoryPolicySpec{Verification: verification, Scanning: scanning}, clean, "", ""},
		{"no rules: nothing to run", v1alpha1.RepositoryPolicySpec{}, Evidence{}, "", ""},
		{"scanning section without thresholds needs no scan", v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{}}, Evidence{}, "", ""},
		{"verification not run never passes", v1alpha1.RepositoryPolicySpec{Verification: verification}, Evidence{Scan: ScanDone}, "NotVerified", "signatures not verified yet"},
		{"scan never ran never passes", v1alpha1.RepositoryPolicySpec{Scanning: scanning}, with(func(e *Evidence) { e.Scan = ScanMissing }), "NotScanned", "no scan of the digest"},
		{"failed scan never passes", v1alpha1.RepositoryPolicySpec{Scanning: scanning}, with(func(e *Evidence) { e.Scan = ScanFailedState }), "ScanFailed", "the scan of the digest failed"},
		{"requireOS fails an image with no OS detected", v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{RequireOS: true}},
			clean, "NoOSDetected", "no OS detected: OS packages not assessed"},
		{"requireOS passes an image with an OS", v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{RequireOS: true}},
			with(func(e *Evidence) { e.OSDetected = true }), "", ""},
		{"requireOS needs a scan", v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{RequireOS: true}},
			with(func(e *Evidence) { e.Scan = ScanMissing; e.OSDetected = true }), "NotScanned", "no scan of the digest"},
		{"signature reasons listed", v1alpha1.RepositoryPolicySpec{Verification: verification},
			with(func(e *Evidence) {
				e.Signature = &SignatureOutcome{Reasons: []string{"SignatureMissing", "AttestationConditionFailed", "SignatureMissing"}}
			}), "AttestationConditionFailed,SignatureMissing", ""},
		{"unverified without a reason", v1alpha1.RepositoryPolicySpec{Verification: verification},
			with(func(e *Evidence) { e.Signature = &SignatureOutcome{} }), "NotVerified", ""},
		{"signatures ignored without verification", v1alpha1.RepositoryPolicySpec{Scanning: scanning},
			with(func(e *Evidence) { e.Signature = &SignatureOutcome{Reasons: []string{"SignatureMissing"}} }), "", ""},
		{"every scan reason at once", v1alpha1.RepositoryPolicySpec{Verification: verification, Scanning: scanning},
			with(func(e *Evidence) {
				e.Signature = &SignatureOutcome{Reasons: []string{"KeyMismatch"}}
				e.Vulnerabilities = []Finding{{ID: "CVE-1", Severity: v1alpha1.SeverityCritical}, {ID: "GO-1"}, {ID: "GO-2"}}
				e.Secrets = 1
				e.Misconfigurations = []v1alpha1.Severity{v1alpha1.SeverityHigh, v1alpha1.SeverityLow}
			}),
			"KeyMismatch,MisconfigurationFound,SecretFound,VulnerabilityThresholdExceeded",
			"vulnerabilities CRITICAL 1 > 0, UNKNOWN 2 > 1|1 exposed secrets|1 misconfigurations above MEDIUM"},
		{"findings within limits pass", v1alpha1.RepositoryPolicySpec{Scanning: scanning},
			with(func(e *Evidence) {
				e.Vulnerabilities = []Finding{{ID: "GO-1"}, {ID: "CVE-2", Severity: v1alpha1.SeverityHigh}}
				e.Misconfigurations = []v1alpha1.Severity{v1alpha1.SeverityMedium}
			}), "", ""},
		{"expired exception fails and says so", v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{
			MaxCritical: i32(0), Exceptions: []v1alpha1.VulnerabilityException{{ID: "CVE-1", Reason: "r", Expires: &metav1.Time{Time: now.Add(-time.Minute)}}}}}},
			with(func(e *Evidence) { e.Vulnerabilities = []Finding{{ID: "CVE-1", Severity: v1alpha1.SeverityCritical}} }),
			"VulnerabilityThresholdExceeded", "vulnerabilities CRITICAL 1 > 0|exception for CVE-1 expired"},
		{"live exception passes", v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{
			MaxCritical: i32(0), Exceptions: []v1alpha1.VulnerabilityException{{ID: "CVE-1", Reason: "r", Expires: &metav1.Time{Time: now.Add(time.Minute)}}}}}},
			with(func(e *Evidence) { e.Vulnerabilities = []Finding{{ID: "CVE-1", Severity: v1alpha1.SeverityCritical}} }), "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := Evaluate(&tc.spec, tc.ev, now)
			if got := strings.Join(v.Reasons, ","); got != tc.reasons {
				t.Errorf("reasons = %q, want %q", got, tc.reasons)
			}
			if got := strings.Join(v.Details, "|"); got != tc.details {
				t.Errorf("details = %q, want %q", got, tc.details)
			}
			if v.Compliant != (tc.reasons == "") {
				t.Errorf("compliant = %v with reasons %q", v.Compliant, tc.reasons)
			}
		})
	}
}
