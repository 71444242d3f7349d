package controller

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// historyLimit is how many verdict transitions status.history keeps (the API's MaxItems).
const historyLimit = 10

// historyReasons is how many reasons one transition keeps (the API's MaxItems).
const historyReasons = 8

// verdictInputs is what an image's verdict depends on, as its status held it before a pass: the
// verdict itself and what could have changed it.
type verdictInputs struct {
	// had: there was a verdict (PolicyCompliant was computed before, not NotEvaluated).
	had      bool
	verdict  string
	reasons  []string
	policies map[string]int64 // selecting policy → the generation its verdict was computed for
	// signatures fingerprints status.signatures (policy, authority, verified, reason).
	signatures string
	scanned    time.Time // status.lastScanTime
	db         time.Time // status.scanner.dbUpdatedAt
}

// inputsOf reads ia's verdict inputs from its status.
func inputsOf(ia *v1alpha1.ImageAttestation) verdictInputs {
	in := verdictInputs{policies: map[string]int64{}}
	c := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.PolicyCompliantCondition)
	in.had = c != nil && c.Reason != v1alpha1.NotEvaluatedReason
	in.verdict, in.reasons = verdictOf(ia)
	for _, p := range ia.Status.Policies {
		in.policies[p.Name] = p.ObservedGeneration
	}
	var b strings.Builder
	for _, s := range ia.Status.Signatures {
		fmt.Fprintf(&b, "%s/%s/%t/%s;", s.Policy, s.Authority, s.Verified, s.Reason)
	}
	in.signatures = b.String()
	if ia.Status.LastScanTime != nil {
		in.scanned = ia.Status.LastScanTime.Time
	}
	if ia.Status.Scanner != nil && ia.Status.Scanner.DBUpdatedAt != nil {
		in.db = ia.Status.Scanner.DBUpdatedAt.Time
	}
	return in
}

// verdictOf is ia's verdict (Compliant, NonCompliant, NoPolicy) and its failing reasons as
// "<policy>: <Reason>", from status.
func verdictOf(ia *v1alpha1.ImageAttestation) (string, []string) {
	var reasons []string
	for _, p := range ia.Status.Policies {
		if !p.Compliant {
			for _, r := range p.Reasons {
				reasons = append(reasons, p.Name+": "+r)
			}
		}
	}
	c := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.PolicyCompliantCondition)
	switch {
	case c == nil || c.Status == metav1.ConditionUnknown:
		return v1alpha1.VerdictNoPolicy, reasons
	case c.Status == metav1.ConditionTrue:
		return v1alpha1.VerdictCompliant, reasons
	}
	return v1alpha1.VerdictNonCompliant, reasons
}

// trigger names what changed between two passes' inputs, the first that applies of: the first
// verdict, a policy change, a signature change, a rescan with a newer DB, a scan, and time.
func trigger(before, after verdictInputs) string {
	switch {
	case !before.had:
		return v1alpha1.TriggerFirstVerdict
	case !maps.Equal(before.policies, after.policies):
		return v1alpha1.TriggerPolicyChange
	case before.signatures != after.signatures:
		return v1alpha1.TriggerSignatureChange
	case !before.scanned.Equal(after.scanned) && !before.db.Equal(after.db):
		return v1alpha1.TriggerDBUpdate
	case !before.scanned.Equal(after.scanned):
		return v1alpha1.TriggerScan
	}
	return v1alpha1.TriggerTime
}

// recordTransition appends to status.history when this pass changed the verdict or its reasons
// (before: the inputs as the pass found them), keeping the last historyLimit.
func recordTransition(ia *v1alpha1.ImageAttestation, before verdictInputs, now time.Time) {
	after := inputsOf(ia)
	if !after.had || before.had && before.verdict == after.verdict && slices.Equal(before.reasons, after.reasons) {
		return
	}
	reasons := after.reasons[:min(len(after.reasons), historyReasons)]
	for i, r := range reasons {
		reasons[i] = truncate(r, 400)
	}
	ia.Status.History = append(ia.Status.History, v1alpha1.VerdictTransition{Time: metav1.NewTime(now.Truncate(time.Second)),
		Verdict: after.verdict, Reasons: reasons, Trigger: trigger(before, after)})
	if n := len(ia.Status.History); n > historyLimit {
		ia.Status.History = slices.Clone(ia.Status.History[n-historyLimit:])
	}
}
