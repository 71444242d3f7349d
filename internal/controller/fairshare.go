package controller

import (
	"context"
	"sync"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// recheckPriority is the queue priority of a periodic look-again at a digest that already has a
// verdict: below every new or changed digest of every Registry (fairShare ranks them 0, -1, -2, ...).
const recheckPriority = -1 << 30

// fairShare orders new and changed ImageAttestations in the controller's priority queue so that one
// Registry's backlog cannot starve another's, nor one namespace (tenant) another's.
//
// Each item waiting for its pass gets the priority -(waiting items of its Registry) x (Registries of
// its namespace with items waiting), fixed when it is queued: the k-th waiting digest of a Registry
// ranks with the k-th of every other Registry of its namespace, and a namespace's share does not grow
// with its number of Registries. A Registry with 100,000 new tags and one with 10 are served in turns,
// not one after the other. Re-checks of digests that have a verdict wait at recheckPriority.
type fairShare struct {
	mu sync.Mutex
	// waiting maps a queued item to its Registry until its pass ends (done).
	waiting map[types.NamespacedName]types.NamespacedName
	// perRegistry counts waiting items per Registry; activeIn counts Registries with waiting items
	// per namespace.
	perRegistry map[types.NamespacedName]int
	activeIn    map[string]int
}

func newFairShare() *fairShare {
	return &fairShare{
		waiting:     map[types.NamespacedName]types.NamespacedName{},
		perRegistry: map[types.NamespacedName]int{},
		activeIn:    map[string]int{},
	}
}

// queued records item as waiting and returns its priority.
func (f *fairShare) queued(item, registry types.NamespacedName) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if prev, ok := f.waiting[item]; ok && prev == registry {
		return -(f.perRegistry[registry] - 1) * f.activeIn[registry.Namespace]
	} else if ok {
		f.forgetLocked(item, prev)
	}
	if f.perRegistry[registry] == 0 {
		f.activeIn[registry.Namespace]++
	}
	rank := f.perRegistry[registry] * f.activeIn[registry.Namespace]
	f.perRegistry[registry]++
	f.waiting[item] = registry
	return -rank
}

// done ends item's wait (its pass ran); items not waiting are ignored.
func (f *fairShare) done(item types.NamespacedName) {
	if f == nil { // a reconciler not set up with a manager (unit tests)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if reg, ok := f.waiting[item]; ok {
		f.forgetLocked(item, reg)
	}
}

func (f *fairShare) forgetLocked(item, registry types.NamespacedName) {
	delete(f.waiting, item)
	f.perRegistry[registry]--
	if f.perRegistry[registry] > 0 {
		return
	}
	delete(f.perRegistry, registry)
	if f.activeIn[registry.Namespace]--; f.activeIn[registry.Namespace] <= 0 {
		delete(f.activeIn, registry.Namespace)
	}
}

// waitingCount is the number of items queued and not yet done.
func (f *fairShare) waitingCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiting)
}

// handler is the ImageAttestation event handler: creates and changes are queued at their fair-share
// priority; an ImageAttestation listed again at start-up that already has a current verdict is a
// re-check. Queues without priorities (never the case with controller-runtime's default) get a plain Add.
func (f *fairShare) handler() fairShareHandler { return fairShareHandler{f} }

type fairShareHandler struct{ f *fairShare }

type requestQueue = workqueue.TypedRateLimitingInterface[reconcile.Request]

func (h fairShareHandler) Create(_ context.Context, e event.CreateEvent, q requestQueue) {
	h.add(q, e.Object, e.IsInInitialList && hasCurrentVerdict(e.Object))
}

func (h fairShareHandler) Update(_ context.Context, e event.UpdateEvent, q requestQueue) {
	h.add(q, e.ObjectNew, false)
}

func (h fairShareHandler) Delete(_ context.Context, e event.DeleteEvent, q requestQueue) {
	h.add(q, e.Object, false)
}

func (h fairShareHandler) Generic(_ context.Context, e event.GenericEvent, q requestQueue) {
	h.add(q, e.Object, false)
}

func (h fairShareHandler) add(q requestQueue, o client.Object, recheck bool) {
	if o == nil {
		return
	}
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)}
	pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request])
	if !ok {
		q.Add(req)
		return
	}
	priority := recheckPriority
	if !recheck {
		reg := types.NamespacedName{Namespace: o.GetNamespace()}
		if ia, ok := o.(*v1alpha1.ImageAttestation); ok {
			reg.Name = ia.Spec.RegistryRef.Name
		}
		priority = max(h.f.queued(req.NamespacedName, reg), recheckPriority+1)
	}
	pq.AddWithOpts(priorityqueue.AddOpts{Priority: &priority}, req)
}

// hasCurrentVerdict reports whether o is an ImageAttestation whose Ready condition was written for
// its current generation and says True (a pass reached its verdict since the spec last changed).
func hasCurrentVerdict(o client.Object) bool {
	ia, ok := o.(*v1alpha1.ImageAttestation)
	if !ok {
		return false
	}
	c := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.ReadyCondition)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == ia.Generation
}
