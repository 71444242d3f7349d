package policy

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// TestStoredEvidence: the evidence rebuilt from status gives the manager's verdict for count
// thresholds (every finding counted by severity, the listed ones with their IDs), reuses signature
// reasons only for the same verification, and says what it could not rebuild.
func TestStoredEvidence(t *testing.T) {
	ia := &v1alpha1.ImageAttestation{Spec: v1alpha1.ImageAttestationSpec{Digest: "sha256:0123"}}
	ia.Status.Conditions = []metav1.Condition{{Type: v1alpha1.VulnerabilitiesScannedCondition, Status: metav1.ConditionTrue, Reason: "Scanned"}}
	ia.Status.Vulnerabilities = &v1alpha1.VulnerabilitySummary{Critical: 1, High: 25, Fixable: 3, Top: []v1alpha1.VulnerabilityFinding{
		{ID: "CVE-1", Severity: v1alpha1.SeverityCritical, FixedVersion: "1.2"}}}
	for i := range 19 {
		ia.Status.Vulnerabilities.Top = append(ia.Status.Vulnerabilities.Top, v1alpha1.VulnerabilityFinding{ID: "CVE-H" + string(rune('a'+i)), Severity: v1alpha1.SeverityHigh})
	}
	stored := &v1alpha1.PolicyResult{Name: "p", Reasons: []string{"KeyMismatch", ReasonVulnerabilityThresholdExceeded}}

	ev, notes := StoredEvidence(ia, stored, true, true)
	if ev.Scan != ScanDone || len(ev.Vulnerabilities) != 26 || ev.Signature == nil || ev.Signature.Verified ||
		len(ev.Signature.Reasons) != 1 || ev.Signature.Reasons[0] != "KeyMismatch" {
		t.Fatalf("evidence: scan %v, %d findings, signature %+v", ev.Scan, len(ev.Vulnerabilities), ev.Signature)
	}
	fixable := 0
	for _, f := range ev.Vulnerabilities {
		if f.Fixable {
			fixable++
		}
	}
	if fixable != 3 || len(notes) != 1 {
		t.Errorf("%d fixable (want 3), notes %q (want one: 6 unlisted)", fixable, notes)
	}
	one := int32(1)
	spec := &v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxCritical: &one}}}
	if v := Evaluate(spec, ev, time.Now()); !v.Compliant {
		t.Errorf("CRITICAL 1 <= 1: %+v", v)
	}
	spec.Scanning.Vulnerabilities.MaxHigh = new(int32)
	spec.Scanning.Vulnerabilities.IgnoreUnfixed = true
	// 2 of the unlisted HIGH are fixable: HIGH 2 > 0.
	if v := Evaluate(spec, ev, time.Now()); v.Compliant || len(v.Details) == 0 {
		t.Errorf("fixable HIGH over 0: %+v", v)
	}

	// Another verification, or none stored: signatures unknown, and said so.
	if ev, notes := StoredEvidence(ia, stored, false, true); ev.Signature != nil || len(notes) != 2 {
		t.Errorf("other verification: signature %+v, notes %q", ev.Signature, notes)
	}
	// A policy that verifies nothing loses nothing by it: no note.
	if _, notes := StoredEvidence(ia, stored, false, false); len(notes) != 1 {
		t.Errorf("no verification: notes %q", notes)
	}
}
