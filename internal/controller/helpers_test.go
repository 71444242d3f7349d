package controller

import (
	"context"
	corev1 "k8s.io/api/core/v1"
	"strings"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// waitFor polls obj from the API server until cond holds, and fails the test after eventuallyTimeout
// with the last status seen.
func waitFor[T statusObject](t *testing.T, obj T, what string, cond func(T) bool) T {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if err == nil && cond(obj) {
			return obj
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: timed out waiting for %s (get error: %v); conditions: %+v",
				obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), what, err, obj.GetConditions())
		}
		time.Sleep(pollInterval)
	}
}

// hasCondition reports whether obj has condition typ with the given status and reason.
func hasCondition(obj statusObject, typ string, s metav1.ConditionStatus, reason string) bool {
	c := apimeta.FindStatusCondition(obj.GetConditions(), typ)
	return c != nil && c.Status == s && c.Reason == reason
}

// kstatusOf computes the object's status as Flux and `kubectl wait` via kstatus see it.
func kstatusOf(t *testing.T, obj client.Object) *status.Result {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	gvk, err := k8sClient.GroupVersionKindFor(obj)
	if err != nil {
		t.Fatal(err)
	}
	u.SetGroupVersionKind(gvk)
	res, err := status.Compute(u)
	if err != nil {
		t.Fatalf("kstatus: %v", err)
	}
	return res
}

// observedGeneration returns status.observedGeneration of one of our kinds.
func observedGeneration(t *testing.T, obj client.Object) int64 {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	g, _, _ := unstructured.NestedInt64(m, "status", "observedGeneration")
	return g
}

func ptr[T any](v T) *T { return &v }

func findCondition(obj statusObject, typ string) *metav1.Condition {
	return apimeta.FindStatusCondition(obj.GetConditions(), typ)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// patchObject applies mutate to obj and sends the difference as a merge patch, so a concurrent status
// write by a controller cannot make the test's write conflict.
func patchObject[T client.Object](t *testing.T, obj T, mutate func(T)) {
	t.Helper()
	base := obj.DeepCopyObject().(T)
	mutate(obj)
	if err := k8sClient.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		t.Fatalf("patching %s: %v", obj.GetName(), err)
	}
}

// reconcileCount reads controller-runtime's reconcile counter for one controller from the global
// metrics registry (all results).
func reconcileCount(t *testing.T, controllerName string) float64 {
	t.Helper()
	return metricValue(t, "controller_runtime_reconcile_total", map[string]string{"controller": controllerName})
}

func basicAuthSecret(ns, name, user, pass string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": user, "password": pass}}
}
