package controller

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// statusObject is a kind whose status carries kstatus conditions and an observedGeneration.
type statusObject interface {
	client.Object
	GetConditions() []metav1.Condition
	SetConditions([]metav1.Condition)
	SetObservedGeneration(int64)
}

// outcomeKind classifies how a reconcile pass ended, following kstatus
// (sigs.k8s.io/cli-utils/pkg/kstatus): a final outcome (ready or stalled) stamps observedGeneration,
// a pending or failed one does not.
type outcomeKind int

const (
	// outcomeReady: the goal for this generation was reached.
	outcomeReady outcomeKind = iota
	// outcomeStalled: the spec or a referenced object must change; no error, no retry.
	outcomeStalled
	// outcomeSuspended: spec.suspend is set; final for this generation. Ready=True with reason
	// Suspended: nothing is wrong and nothing is in progress, so kstatus (Flux) reads it
	// as Current and a GitOps health check does not wait on a Registry paused on purpose.
	outcomeSuspended
	// outcomePending: work goes on (Ready=Unknown, Reconciling=True); not final.
	outcomePending
	// outcomeFailed: a transient failure; Ready=False, Reconciling=True, the error is returned so that
	// controller-runtime backs off.
	outcomeFailed
)

// outcome is the result of one reconcile pass, turned into conditions by applyOutcome.
type outcome struct {
	kind    outcomeKind
	reason  string
	message string
	// afterWrite runs once the status is written (events about the transition it records), so a
	// failed write and its retry do not announce the same transition twice.
	afterWrite []func()
}

func ready(reason, format string, args ...any) outcome {
	return outcome{kind: outcomeReady, reason: reason, message: fmt.Sprintf(format, args...)}
}

func stalled(reason, format string, args ...any) outcome {
	return outcome{kind: outcomeStalled, reason: reason, message: fmt.Sprintf(format, args...)}
}

func pending(reason, format string, args ...any) outcome {
	return outcome{kind: outcomePending, reason: reason, message: fmt.Sprintf(format, args...)}
}

func failed(reason string, err error) outcome {
	return outcome{kind: outcomeFailed, reason: reason, message: err.Error()}
}

// applyOutcome sets Ready, Reconciling and Stalled from o. Abnormal-true conditions (Reconciling,
// Stalled) are removed when they do not hold, as Flux does. LastTransitionTime only moves when a
// condition's status changes (meta.SetStatusCondition).
func applyOutcome(obj statusObject, o outcome) {
	conds := obj.GetConditions()
	gen := obj.GetGeneration()
	set := func(t string, s metav1.ConditionStatus) {
		apimeta.SetStatusCondition(&conds, metav1.Condition{
			Type: t, Status: s, Reason: o.reason, Message: o.message, ObservedGeneration: gen,
		})
	}
	switch o.kind {
	case outcomeReady:
		set(v1alpha1.ReadyCondition, metav1.ConditionTrue)
		apimeta.RemoveStatusCondition(&conds, v1alpha1.ReconcilingCondition)
		apimeta.RemoveStatusCondition(&conds, v1alpha1.StalledCondition)
		obj.SetObservedGeneration(gen)
	case outcomeStalled:
		set(v1alpha1.ReadyCondition, metav1.ConditionFalse)
		set(v1alpha1.StalledCondition, metav1.ConditionTrue)
		apimeta.RemoveStatusCondition(&conds, v1alpha1.ReconcilingCondition)
		obj.SetObservedGeneration(gen)
	case outcomeSuspended:
		set(v1alpha1.ReadyCondition, metav1.ConditionTrue)
		apimeta.RemoveStatusCondition(&conds, v1alpha1.ReconcilingCondition)
		apimeta.RemoveStatusCondition(&conds, v1alpha1.StalledCondition)
		obj.SetObservedGeneration(gen)
	case outcomePending, outcomeFailed:
		readyStatus := metav1.ConditionFalse
		if o.kind == outcomePending {
			readyStatus = metav1.ConditionUnknown
		}
		set(v1alpha1.ReadyCondition, readyStatus)
		set(v1alpha1.ReconcilingCondition, metav1.ConditionTrue)
		apimeta.RemoveStatusCondition(&conds, v1alpha1.StalledCondition)
	}
	obj.SetConditions(conds)
}

// patchStatus writes obj's status with one merge patch against base, and writes nothing when the
// status did not change, so a steady-state pass costs no API-server write.
func patchStatus(ctx context.Context, c client.Client, obj, base statusObject) error {
	if equality.Semantic.DeepEqual(obj, base) {
		return nil
	}
	if err := c.Status().Patch(ctx, obj, client.MergeFrom(base)); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}

// reconcileOnce is the Reconcile of a kind whose pass is one step: fetch obj by key (gone: nothing to
// do), run step, turn its outcome into conditions, write the status with at most one patch, and then
// run the outcome's afterWrite. step's error is returned so that controller-runtime backs off.
func reconcileOnce[T statusObject](ctx context.Context, c client.Client, key client.ObjectKey, obj T,
	step func(context.Context, T) (outcome, error)) (retErr error) {
	if err := c.Get(ctx, key, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	base := obj.DeepCopyObject().(T)
	var o outcome
	defer func() {
		if err := patchStatus(ctx, c, obj, base); err != nil {
			if retErr == nil {
				retErr = fmt.Errorf("patching status: %w", err)
			}
			return
		}
		for _, f := range o.afterWrite {
			f()
		}
	}()
	o, err := step(ctx, obj)
	applyOutcome(obj, o)
	return err
}

// hasConditionStatus reports whether obj has condition typ with status s.
func hasConditionStatus(obj statusObject, typ string, s metav1.ConditionStatus) bool {
	c := apimeta.FindStatusCondition(obj.GetConditions(), typ)
	return c != nil && c.Status == s
}

func ptrTo[T any](v T) *T { return &v }
