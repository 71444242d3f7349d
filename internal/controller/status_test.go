package controller

import (
	"context"
	"errors"
	"net/url"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// TestApplyOutcome checks the kstatus mapping of each outcome: which conditions hold and whether
// observedGeneration is stamped (only for final outcomes).
func TestApplyOutcome(t *testing.T) {
	cases := []struct {
		name               string
		o                  outcome
		ready              metav1.ConditionStatus
		reconciling, stall bool
		stampsObservedGen  bool
	}{
		{"ready", ready(v1alpha1.SucceededReason, "ok"), metav1.ConditionTrue, false, false, true},
		{"stalled", stalled(v1alpha1.SecretNotFoundReason, "no %s", "secret"), metav1.ConditionFalse, false, true, true},
		{"suspended", outcome{kind: outcomeSuspended, reason: v1alpha1.SuspendedReason}, metav1.ConditionTrue, false, false, true},
		{"pending", pending(v1alpha1.PendingReason, "wait"), metav1.ConditionUnknown, true, false, false},
		{"failed", failed("ReadFailed", errors.New("boom")), metav1.ConditionFalse, true, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
			obj.Status.ObservedGeneration = 2
			// Start from the opposite state so that stale conditions must be cleared.
			obj.Status.Conditions = []metav1.Condition{
				{Type: v1alpha1.StalledCondition, Status: metav1.ConditionTrue, Reason: "Old"},
				{Type: v1alpha1.ReconcilingCondition, Status: metav1.ConditionTrue, Reason: "Old"},
			}
			applyOutcome(obj, tc.o)
			if c := findCondition(obj, v1alpha1.ReadyCondition); c == nil || c.Status != tc.ready || c.Reason != tc.o.reason || c.ObservedGeneration != 3 {
				t.Errorf("Ready = %+v, want %s/%s at generation 3", c, tc.ready, tc.o.reason)
			}
			if got := findCondition(obj, v1alpha1.ReconcilingCondition) != nil; got != tc.reconciling {
				t.Errorf("Reconciling present = %v, want %v", got, tc.reconciling)
			}
			if got := findCondition(obj, v1alpha1.StalledCondition) != nil; got != tc.stall {
				t.Errorf("Stalled present = %v, want %v", got, tc.stall)
			}
			if got := obj.Status.ObservedGeneration == 3; got != tc.stampsObservedGen {
				t.Errorf("observedGeneration = %d; stamped = %v, want %v", obj.Status.ObservedGeneration, got, tc.stampsObservedGen)
			}
		})
	}
}

func TestHostAllowed(t *testing.T) {
	o := Options{AllowedRegistryHosts: []string{"*.corp.example", "registry.internal:5000", "GHCR.IO"}}
	cases := map[string]bool{
		"https://a.corp.example":         true,
		"https://a.corp.example:8443":    true,
		"https://corp.example":           false,
		"https://a.b.corp.example":       true, // doublestar's * stops only at '/', which hosts lack
		"https://registry.internal:5000": true,
		"https://registry.internal":      false,
		"https://registry.internal:5001": false,
		"https://ghcr.io":                true,
		"https://169.254.169.254":        false,
		"http://localhost:5000":          false,
	}
	for raw, want := range cases {
		u, _ := url.Parse(raw)
		if got := o.hostAllowed(u); got != want {
			t.Errorf("hostAllowed(%s) = %v, want %v", raw, got, want)
		}
	}
	if !(Options{}).hostAllowed(&url.URL{Host: "anything"}) {
		t.Error("an empty allowlist must allow every host")
	}
}

// TestAfterWriteRunsOnlyOnceWritten: what an outcome announces (an event) runs after its status is
// written, and not at all when the write fails, so the retry announces it once.
func TestAfterWriteRunsOnlyOnceWritten(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: "https://registry.example.com", Suspend: true}}
	if err := k8sClient.Create(ctx, reg); err != nil {
		t.Fatal(err)
	}
	c := &refusingStatus{Client: k8sClient, refuse: true}
	ran := 0
	step := func(context.Context, *v1alpha1.Registry) (outcome, error) {
		o := ready(v1alpha1.SucceededReason, "pass %d", ran)
		o.afterWrite = append(o.afterWrite, func() { ran++ })
		return o, nil
	}
	key := client.ObjectKeyFromObject(reg)
	if err := reconcileOnce(ctx, c, key, &v1alpha1.Registry{}, step); err == nil || ran != 0 {
		t.Fatalf("failed write: err %v, afterWrite ran %d times", err, ran)
	}
	c.refuse = false
	if err := reconcileOnce(ctx, c, key, &v1alpha1.Registry{}, step); err != nil || ran != 1 {
		t.Fatalf("written: err %v, afterWrite ran %d times", err, ran)
	}
}

// refusingStatus is a client whose status writes fail while refuse is set.
type refusingStatus struct {
	client.Client
	refuse bool
}

func (c *refusingStatus) Status() client.SubResourceWriter {
	if c.refuse {
		return refusingWriter{c.Client.Status()}
	}
	return c.Client.Status()
}

type refusingWriter struct{ client.SubResourceWriter }

func (refusingWriter) Patch(context.Context, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
	return errors.New("injected: the API server refused the write")
}
