package policy

import (
	"fmt"
	"slices"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// scanReasons are the verdict reasons that come from the scan or the policy itself; every other
// reason is a signature or attestation reason (internal/verify).
var scanReasons = []string{ReasonNotScanned, ReasonScanFailed, ReasonVulnerabilityThresholdExceeded, ReasonSecretFound,
	ReasonMisconfigurationFound, ReasonNoOSDetected, ReasonPolicyInvalid}

// StoredEvidence rebuilds, from an ImageAttestation's status alone, the evidence a verdict is
// computed from, for evaluating a policy that is not applied yet (`portcullis what-if`). stored is
// the image's current result under the policy of the same name (nil when it has none), and
// sameVerification says whether that policy verifies signatures as the new one does: only then is
// its signature outcome reused; otherwise the signature outcome is unknown (nil: NotVerified), and a
// note says so when the new policy verifies signatures (verifies). The notes say where the evidence is less than the manager's: the status keeps the top 20
// vulnerabilities and misconfigurations with their IDs, the others only as counts per severity
// (rebuilt without IDs, so exceptions and VEX cannot match them), and no VEX documents.
func StoredEvidence(ia *v1alpha1.ImageAttestation, stored *v1alpha1.PolicyResult, sameVerification, verifies bool) (Evidence, []string) {
	ev := Evidence{Digest: ia.Spec.Digest}
	var notes []string
	if stored != nil && sameVerification {
		ev.Signature = &SignatureOutcome{Verified: true}
		for _, r := range stored.Reasons {
			if !slices.Contains(scanReasons, r) {
				ev.Signature.Verified = false
				ev.Signature.Reasons = append(ev.Signature.Reasons, r)
			}
		}
	} else if verifies {
		notes = append(notes, "signatures not verified under this policy's verification")
	}
	c := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.VulnerabilitiesScannedCondition)
	switch {
	case c == nil:
		ev.Scan = ScanMissing
	case c.Status == metav1.ConditionTrue:
		ev.Scan = ScanDone
	case c.Reason == "NotApplicable":
		ev.Scan = ScanNotApplicable
	case c.Reason == ReasonScanFailed:
		ev.Scan = ScanFailedState
	default:
		ev.Scan = ScanMissing
	}
	ev.OSDetected = ia.Status.Scanner != nil && ia.Status.Scanner.OS != "" && ia.Status.Scanner.OS != "none"
	if v := ia.Status.Vulnerabilities; v != nil {
		fixable := int(v.Fixable)
		listed := map[v1alpha1.Severity]int32{}
		for _, f := range v.Top {
			ev.Vulnerabilities = append(ev.Vulnerabilities, Finding{ID: f.ID, Severity: f.Severity, Fixable: f.FixedVersion != "", Package: f.Package})
			listed[f.Severity]++
			if f.FixedVersion != "" {
				fixable--
			}
		}
		unlisted := 0
		for _, s := range []struct {
			sev v1alpha1.Severity
			n   int32
		}{{v1alpha1.SeverityCritical, v.Critical}, {v1alpha1.SeverityHigh, v.High}, {v1alpha1.SeverityMedium, v.Medium},
			{v1alpha1.SeverityLow, v.Low}, {v1alpha1.SeverityUnknown, v.Unknown}} {
			for range max(0, s.n-listed[s.sev]) {
				// The unlisted fixable ones are taken to be the most severe (the status does not say).
				ev.Vulnerabilities = append(ev.Vulnerabilities, Finding{Severity: s.sev, Fixable: fixable > 0})
				fixable--
				unlisted++
			}
		}
		if unlisted > 0 {
			notes = append(notes, fmt.Sprintf("%d vulnerabilities beyond the 20 listed are counted by severity only", unlisted))
		}
	}
	if s := ia.Status.Secrets; s != nil {
		ev.Secrets = int(s.Count)
	}
	if m := ia.Status.Misconfigurations; m != nil {
		for _, f := range m.Top {
			ev.Misconfigurations = append(ev.Misconfigurations, f.Severity)
		}
		if n := int(m.Count) - len(m.Top); n > 0 {
			for range n {
				ev.Misconfigurations = append(ev.Misconfigurations, v1alpha1.SeverityUnknown)
			}
			notes = append(notes, fmt.Sprintf("%d misconfigurations beyond the 20 listed have no stored severity (taken as UNKNOWN)", n))
		}
	}
	return ev, notes
}
