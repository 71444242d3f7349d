package receiver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// received counts deliveries by Registry (namespace/name) and result (accepted, refused).
var received = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "portcullis_receiver_deliveries_total",
	Help: "Registry notifications received, by Registry (namespace/name) and result: accepted or refused.",
}, []string{"registry", "result"})

func init() { ctrlmetrics.Registry.MustRegister(received) }

// Collectors are the metrics this package serves on the manager's /metrics (the README's table is
// checked against them).
func Collectors() []prometheus.Collector { return []prometheus.Collector{received} }

// repoKey is one repository of one Registry: the unit events are coalesced by. A burst of
// deliveries for a repository waits as one queue item and is worked off together.
type repoKey struct {
	registry   types.NamespacedName
	repository string
}

// queue holds, per repository, the events to work off: client-go's workqueue of repoKeys (a key
// already waiting is not added twice; backoff for retries) and each key's pending batch.
type queue struct {
	q workqueue.TypedRateLimitingInterface[repoKey]

	mu      sync.Mutex
	pending map[repoKey]*batch
	// events is the number of distinct events waiting in all batches.
	events int
}

// maxQueued bounds the events waiting; a delivery beyond it is refused (503) until workers catch up.
const maxQueued = 10000

func newQueue() *queue {
	return &queue{pending: map[repoKey]*batch{},
		q: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[repoKey](500*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[repoKey]{Name: "receiver"})}
}

// full reports whether the queue holds maxQueued events or more.
func (q *queue) full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.events >= maxQueued
}

// add puts e into its repository's batch (an event already waiting there is not added again) and
// queues the repository.
func (q *queue) add(reg types.NamespacedName, e Event) {
	k := repoKey{reg, e.Repository}
	q.mu.Lock()
	b := q.pending[k]
	if b == nil {
		b = &batch{}
		q.pending[k] = b
	}
	q.events += b.add(e)
	q.mu.Unlock()
	q.q.Add(k)
}

// take removes and returns k's pending batch (nil when none).
func (q *queue) take(k repoKey) *batch {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.pending[k]
	delete(q.pending, k)
	if b != nil {
		q.events -= b.size()
	}
	return b
}

// putBack returns the events of b that failed to k's batch, ahead of a retry.
func (q *queue) putBack(k repoKey, b *batch) {
	q.mu.Lock()
	defer q.mu.Unlock()
	have := q.pending[k]
	if have == nil {
		q.pending[k] = b
		q.events += b.size()
		return
	}
	q.events += have.merge(b)
}

// Getter reads a Registry (the manager's cache).
type Getter func(ctx context.Context, key types.NamespacedName) (*v1alpha1.Registry, error)

// Server runs the receiver: the HTTP endpoint on Addr and Workers event workers. It is a
// controller-runtime Runnable that needs leader election (the workers write).
type Server struct {
	Addr    string
	Handler *Handler
	Get     Getter
	// Workers work off events concurrently (default 2).
	Workers int
	// ready is closed once the listener is open (tests).
	ready chan struct{}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (s *Server) NeedLeaderElection() bool { return true }

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("receiver")
	q := newQueue()
	s.Handler.queue = q
	defer q.q.ShutDown()
	workers := s.Workers
	if workers <= 0 {
		workers = 2
	}
	for range workers {
		go s.work(ctx, q)
	}
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return err
	}
	if s.ready != nil {
		close(s.ready)
	}
	srv := &http.Server{Handler: s.Handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		MaxHeaderBytes: 64 << 10}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("receiving registry notifications", "addr", l.Addr().String())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// maxTries bounds the attempts at one repository's events (a registry that does not answer).
const maxTries = 5

// stepTimeout bounds one registry check (one event, or the repository's listing).
const stepTimeout = time.Minute

func (s *Server) work(ctx context.Context, q *queue) {
	log := ctrl.LoggerFrom(ctx).WithName("receiver")
	for {
		k, shutdown := q.q.Get()
		if shutdown {
			return
		}
		var failed *batch
		var err error
		if b := q.take(k); b != nil {
			failed, err = s.handle(ctx, k, b)
		}
		switch {
		case failed == nil:
			q.q.Forget(k)
		case q.q.NumRequeues(k) < maxTries-1:
			q.putBack(k, failed)
			q.q.AddRateLimited(k)
		default:
			q.q.Forget(k)
			// The error is the registry's kind and HTTP status only (registry.Sanitize), never a body.
			log.Info("giving up on notification events; the next listing covers them", "registry", k.registry.String(),
				"repository", k.repository, "events", failed.size(), "error", registry.Sanitize("notification", err).Error())
		}
		q.q.Done(k)
	}
}

// handle works off one repository's batch: each step under its own deadline, then the
// repository's listing when a step or the batch asks for one. It returns what failed (nil when
// nothing did) and the last error.
func (s *Server) handle(ctx context.Context, k repoKey, b *batch) (*batch, error) {
	reg, err := s.Get(ctx, k.registry)
	if err != nil {
		return b, err
	}
	steps, relist := b.plan()
	failed := &batch{}
	var last error
	for _, e := range steps {
		err := s.step(ctx, reg, e)
		switch {
		case err == nil, errors.Is(err, ErrIgnored):
		case errors.Is(err, ErrRelist):
			relist = true
		default:
			failed.add(e)
			last = err
		}
	}
	if relist {
		sctx, cancel := context.WithTimeout(ctx, stepTimeout)
		err := s.Handler.Target.Relist(sctx, reg, k.repository)
		cancel()
		if err != nil {
			failed.collapse()
			last = err
		}
	}
	if failed.size() == 0 {
		return nil, nil
	}
	return failed, last
}

func (s *Server) step(ctx context.Context, reg *v1alpha1.Registry, e Event) error {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	switch e.Action {
	case Delete:
		return s.Handler.Target.Forget(ctx, reg, e.Repository, e.Tag, e.Digest)
	case LookAgain:
		return s.Handler.Target.LookAgain(ctx, reg, e.Repository, e.Tag, e.Digest)
	default:
		_, err := s.Handler.Target.Evaluate(ctx, reg, e.Repository, e.Tag, e.Digest)
		return err
	}
}
