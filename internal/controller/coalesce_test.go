package controller

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// TestCoalescedVerdictEvents: a burst of verdict changes enqueues its policy once, after the delay,
// not once per verdict (a first pass at 10,000 images otherwise counts the policy thousands of times).
func TestCoalescedVerdictEvents(t *testing.T) {
	ctx := context.Background()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	policyReq := reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "team-a", Name: "main"}}
	mapped := 0
	h := coalesced(func(context.Context, client.Object) []reconcile.Request {
		mapped++
		return []reconcile.Request{policyReq}
	}, 200*time.Millisecond)
	for i := range 500 {
		ia := &v1alpha1.ImageAttestation{}
		ia.Name = "img-" + string(rune('a'+i%26))
		h.Update(ctx, event.UpdateEvent{ObjectOld: ia, ObjectNew: ia}, q)
	}
	h.Create(ctx, event.CreateEvent{Object: &v1alpha1.ImageAttestation{}}, q)
	if mapped != 501 {
		t.Fatalf("mapped %d events, want 501", mapped)
	}
	if n := q.Len(); n != 0 {
		t.Fatalf("%d requests ready before the delay, want 0", n)
	}
	time.Sleep(400 * time.Millisecond)
	if n := q.Len(); n != 1 {
		t.Fatalf("%d requests ready after the delay, want 1", n)
	}
	if got, _ := q.Get(); got != policyReq {
		t.Fatalf("got %v", got)
	}
}
