package controller

import (
	"context"
	"fmt"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func fairIA(ns, registry string, i int) *v1alpha1.ImageAttestation {
	ia := &v1alpha1.ImageAttestation{}
	ia.Namespace, ia.Name = ns, fmt.Sprintf("%s-%d", registry, i)
	ia.Spec.RegistryRef.Name = registry
	ia.Generation = 1
	return ia
}

// drain takes n items from q in queue order and marks each done, as Reconcile does.
func drain(t *testing.T, q priorityqueue.PriorityQueue[reconcile.Request], f *fairShare, n int) []types.NamespacedName {
	t.Helper()
	var out []types.NamespacedName
	for range n {
		req, _, shutdown := q.GetWithPriority()
		if shutdown {
			t.Fatal("queue shut down")
		}
		q.Done(req)
		f.done(req.NamespacedName)
		out = append(out, req.NamespacedName)
	}
	return out
}

// A Registry with a large backlog of new digests does not hold back another Registry's new digests,
// and a namespace with two Registries gets the same share as a namespace with one.
func TestFairShareServesRegistriesInTurns(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("fairshare-test")
	defer q.ShutDown()
	f := newFairShare()
	h := f.handler()
	ctx := context.Background()
	// Tenant a: one big Registry listed first (300 new digests), then a small one (5).
	for i := range 300 {
		h.Create(ctx, event.CreateEvent{Object: fairIA("a", "big", i)}, q)
	}
	for i := range 5 {
		h.Create(ctx, event.CreateEvent{Object: fairIA("a", "small", i)}, q)
	}
	// Tenant b: one Registry (20) after them.
	for i := range 20 {
		h.Create(ctx, event.CreateEvent{Object: fairIA("b", "other", i)}, q)
	}
	got := drain(t, q, f, 40)
	byTenant := map[string]int{}
	small := 0
	for _, n := range got {
		byTenant[n.Namespace]++
		if n.Namespace == "a" && len(n.Name) >= 5 && n.Name[:5] == "small" {
			small++
		}
	}
	if small != 5 {
		t.Errorf("the small Registry's 5 digests: %d of them among the first 40 passes, want all 5 (queue order %v)", small, got)
	}
	if byTenant["b"] < 15 || byTenant["b"] > 25 {
		t.Errorf("tenant b got %d of the first 40 passes, want about half (tenant a: %d)", byTenant["b"], byTenant["a"])
	}
	if w := f.waitingCount(); w != 325-40 {
		t.Errorf("waiting after 40 passes = %d, want %d", w, 325-40)
	}
}

// Re-checks wait behind every new digest; a digest listed again at start-up without a current verdict
// is new work, one with a current verdict is a re-check.
func TestFairShareRechecksLast(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("fairshare-recheck")
	defer q.ShutDown()
	f := newFairShare()
	h := f.handler()
	ctx := context.Background()
	verdicted := fairIA("a", "reg", 0)
	apimeta.SetStatusCondition(&verdicted.Status.Conditions, metav1.Condition{Type: v1alpha1.ReadyCondition, Status: metav1.ConditionTrue, Reason: v1alpha1.SucceededReason, ObservedGeneration: 1})
	h.Create(ctx, event.CreateEvent{Object: verdicted, IsInInitialList: true}, q)
	stale := fairIA("a", "reg", 1)
	apimeta.SetStatusCondition(&stale.Status.Conditions, metav1.Condition{Type: v1alpha1.ReadyCondition, Status: metav1.ConditionTrue, Reason: v1alpha1.SucceededReason, ObservedGeneration: 0})
	stale.Generation = 2
	h.Create(ctx, event.CreateEvent{Object: stale, IsInInitialList: true}, q)
	for i := 2; i < 50; i++ {
		h.Create(ctx, event.CreateEvent{Object: fairIA("b", "reg", i)}, q)
	}
	got := drain(t, q, f, 50)
	if got[49].Name != verdicted.Name {
		t.Errorf("last pass = %v, want the re-check %s", got[49], verdicted.Name)
	}
	if got[0].Name != stale.Name && got[1].Name != stale.Name {
		t.Errorf("the digest whose verdict predates its spec came at %v, want among the first two", got)
	}
	if w := f.waitingCount(); w != 0 {
		t.Errorf("waiting after every pass = %d, want 0", w)
	}
}
