package controller

import (
	"fmt"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// judged sets ia's verdict as evaluate would: the PolicyCompliant condition and one policy result.
func judged(ia *v1alpha1.ImageAttestation, generation int64, compliant bool, reasons ...string) {
	status, reason := metav1.ConditionTrue, "Compliant"
	if !compliant {
		status, reason = metav1.ConditionFalse, "NonCompliant"
	}
	apimeta.SetStatusCondition(&ia.Status.Conditions, metav1.Condition{Type: v1alpha1.PolicyCompliantCondition, Status: status, Reason: reason})
	ia.Status.Policies = []v1alpha1.PolicyResult{{Name: "prod", ObservedGeneration: generation, Compliant: compliant, Reasons: reasons}}
}

// TestVerdictHistory: a pass that changes the verdict (or its reasons) adds one transition naming
// what changed; a pass that changes nothing adds none; the history keeps the last 10, oldest first.
func TestVerdictHistory(t *testing.T) {
	ia := &v1alpha1.ImageAttestation{}
	initDomainConditions(ia)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	pass := func(at time.Duration, change func()) {
		prior := inputsOf(ia)
		change()
		recordTransition(ia, prior, t0.Add(at))
	}

	pass(0, func() { judged(ia, 1, false, "Unsigned") })
	pass(time.Minute, func() {}) // nothing changed
	pass(2*time.Minute, func() {
		judged(ia, 1, true)
		ia.Status.Signatures = []v1alpha1.SignatureResult{{Policy: "prod", Authority: "release", Verified: true}}
	})
	pass(3*time.Minute, func() { judged(ia, 2, false, "Vulnerable") })
	pass(4*time.Minute, func() { judged(ia, 3, false, "Vulnerable") }) // a policy change, same verdict: nothing
	pass(5*time.Minute, func() {
		ia.Status.LastScanTime = &metav1.Time{Time: t0.Add(5 * time.Minute)}
		ia.Status.Scanner = &v1alpha1.ScannerInfo{DBUpdatedAt: &metav1.Time{Time: t0.Add(4 * time.Minute)}}
		judged(ia, 3, false, "Vulnerable", "SecretsFound")
	})
	pass(6*time.Minute, func() { judged(ia, 3, true) }) // an exception took effect: time

	want := []struct {
		verdict, trigger string
		reasons          int
	}{
		{v1alpha1.VerdictNonCompliant, v1alpha1.TriggerFirstVerdict, 1},
		{v1alpha1.VerdictCompliant, v1alpha1.TriggerSignatureChange, 0},
		{v1alpha1.VerdictNonCompliant, v1alpha1.TriggerPolicyChange, 1},
		{v1alpha1.VerdictNonCompliant, v1alpha1.TriggerDBUpdate, 2},
		{v1alpha1.VerdictCompliant, v1alpha1.TriggerTime, 0},
	}
	if len(ia.Status.History) != len(want) {
		t.Fatalf("history: %+v; want %d transitions", ia.Status.History, len(want))
	}
	for i, w := range want {
		h := ia.Status.History[i]
		if h.Verdict != w.verdict || h.Trigger != w.trigger || len(h.Reasons) != w.reasons {
			t.Errorf("transition %d: %+v; want %s by %s with %d reasons", i, h, w.verdict, w.trigger, w.reasons)
		}
	}
	if got := ia.Status.History[0].Reasons; got[0] != "prod: Unsigned" {
		t.Errorf("reasons: %q; want \"prod: Unsigned\"", got)
	}

	// Many changes: the last 10 stay, oldest first.
	for i := range 25 {
		pass(time.Duration(10+i)*time.Minute, func() { judged(ia, 3, i%2 == 0, fmt.Sprintf("R%d", i)) })
	}
	if len(ia.Status.History) != historyLimit {
		t.Fatalf("history holds %d transitions; want %d", len(ia.Status.History), historyLimit)
	}
	for i := 1; i < len(ia.Status.History); i++ {
		if !ia.Status.History[i-1].Time.Before(&ia.Status.History[i].Time) {
			t.Fatalf("history out of order at %d: %v then %v", i, ia.Status.History[i-1].Time, ia.Status.History[i].Time)
		}
	}
	if last := ia.Status.History[historyLimit-1]; !last.Time.Equal(&metav1.Time{Time: t0.Add(34 * time.Minute)}) {
		t.Errorf("the newest transition is at %v; want the last pass's", last.Time)
	}

	// Many reasons: at most 8 kept.
	many := make([]string, 20)
	for i := range many {
		many[i] = fmt.Sprintf("R%d", i)
	}
	pass(time.Hour, func() { judged(ia, 3, false, many...) })
	if got := ia.Status.History[historyLimit-1].Reasons; len(got) != historyReasons {
		t.Errorf("a transition keeps %d reasons; want %d", len(got), historyReasons)
	}
}
