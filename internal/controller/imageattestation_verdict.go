package controller

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Reasons of the PolicyCompliant condition and of verdict events. When the image fails, the
// condition's reason is the first reason of the first failing policy (by name) and the message lists
// every policy's reasons.
const (
	compliantReason    = "Compliant"
	nonCompliantReason = "NonCompliant"
	noPolicyReason     = "NoPolicy"
)

// evaluate computes every selecting policy's verdict from the pass's evidence and writes
// status.policies and PolicyCompliant. It returns a one-line summary for Ready.
func evaluate(ia *v1alpha1.ImageAttestation, policies []v1alpha1.RepositoryPolicy, sigs map[string]*policy.SignatureOutcome,
	rec *scanRecord, state policy.ScanState, now time.Time) string {
	cond := metav1.Condition{Type: v1alpha1.PolicyCompliantCondition, ObservedGeneration: ia.Generation}
	results := make([]v1alpha1.PolicyResult, 0, len(policies))
	var failures []string
	firstReason := ""
	for i := range policies {
		p := &policies[i]
		ev := policy.Evidence{Signature: sigs[p.Name], Scan: state, Digest: ia.Spec.Digest,
			OSDetected: osDetected(ia)}
		if rec != nil {
			ev.Vulnerabilities, ev.Secrets, ev.Misconfigurations = rec.vulns, rec.secrets, rec.misconf
		}
		v := policy.Evaluate(&p.Spec, ev, now)
		results = append(results, v1alpha1.PolicyResult{Name: p.Name, ObservedGeneration: p.Generation, Compliant: v.Compliant,
			Reasons: v.Reasons[:min(len(v.Reasons), 16)], VEX: vexResult(v.VEX)})
		line := p.Name + ": "
		if v.Compliant {
			line += "compliant"
		} else {
			line += strings.Join(v.Reasons, ", ")
			if firstReason == "" {
				firstReason = v.Reasons[0]
			}
		}
		if len(v.Details) > 0 {
			line += " (" + strings.Join(v.Details, "; ") + ")"
		}
		failures = append(failures, line)
	}
	failing := 0 // over every policy, before status.policies is cut to the API's 64
	for _, r := range results {
		if !r.Compliant {
			failing++
		}
	}
	if len(results) > 64 {
		results = results[:64]
	}
	ia.Status.Policies = results
	switch {
	case len(policies) == 0:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionUnknown, noPolicyReason, "no RepositoryPolicy selects this image"
	case failing == 0:
		cond.Status, cond.Reason = metav1.ConditionTrue, compliantReason
	default:
		cond.Status, cond.Reason = metav1.ConditionFalse, firstReason
	}
	if len(policies) > 0 {
		cond.Message = truncate(strings.Join(failures, "; "), 2000)
	}
	apimeta.SetStatusCondition(&ia.Status.Conditions, cond)
	switch {
	case len(policies) == 0:
		return "no policy selects the image"
	case failing == 0:
		return fmt.Sprintf("verdict is current: compliant with %d policies", len(policies))
	}
	return fmt.Sprintf("verdict is current: fails %d of %d policies", failing, len(policies))
}

// vexResult is the status form of a verdict's VEX outcome: bounded to 16 suppressed findings and 8
// ignored documents.
func vexResult(o *policy.VEXOutcome) *v1alpha1.VEXResult {
	if o == nil {
		return nil
	}
	out := &v1alpha1.VEXResult{SuppressedCount: int32(len(o.Suppressed))}
	for _, s := range o.Suppressed[:min(len(o.Suppressed), 16)] {
		out.Suppressed = append(out.Suppressed, v1alpha1.SuppressedFinding{ID: s.ID, Package: s.Package, Status: s.Status,
			Justification: s.Justification, Source: s.Source, Authority: s.Authority})
	}
	for _, i := range o.Ignored[:min(len(o.Ignored), 8)] {
		out.Ignored = append(out.Ignored, truncate(i, 512))
	}
	return out
}

// verdictTransition returns what announces the image turning non-compliant or compliant again (an
// event and the transition counter), to run once the status is written; nil when the verdict did not
// change, or is the first verdict of a compliant image.
func verdictTransition(rec events.EventRecorder, ia *v1alpha1.ImageAttestation, before *metav1.Condition) func() {
	after := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.PolicyCompliantCondition)
	if after == nil || (before != nil && before.Status == after.Status) {
		return nil
	}
	image := ia.Spec.Repository + "@" + ia.Spec.Digest
	switch {
	case after.Status == metav1.ConditionFalse:
		note := truncate(after.Message, 800)
		return func() {
			verdictEvents.WithLabelValues("noncompliant").Inc()
			if rec != nil {
				rec.Eventf(ia, nil, corev1.EventTypeWarning, nonCompliantReason, "Evaluate", "%s is not compliant: %s", image, note)
			}
		}
	case after.Status == metav1.ConditionTrue && before != nil && before.Status == metav1.ConditionFalse:
		return func() {
			verdictEvents.WithLabelValues("compliant").Inc()
			if rec != nil {
				rec.Eventf(ia, nil, corev1.EventTypeNormal, compliantReason, "Evaluate", "%s is compliant again", image)
			}
		}
	}
	return nil
}

// verdictCurrent reports whether ia carries a verdict of policy p's current generation, and which.
func verdictCurrent(ia *v1alpha1.ImageAttestation, p *v1alpha1.RepositoryPolicy) (res v1alpha1.PolicyResult, ok bool) {
	i := slices.IndexFunc(ia.Status.Policies, func(r v1alpha1.PolicyResult) bool { return r.Name == p.Name })
	if i < 0 || ia.Status.Policies[i].ObservedGeneration != p.Generation {
		return v1alpha1.PolicyResult{}, false
	}
	return ia.Status.Policies[i], true
}
