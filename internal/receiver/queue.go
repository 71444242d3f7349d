package receiver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
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

// item is one event of one Registry: identical items waiting in the queue are one.
type item struct {
	registry types.NamespacedName
	event    Event
}

// queue holds the events to work off, deduplicated (client-go's workqueue: an item already
// waiting is not added twice), with backoff for retries.
type queue struct {
	q workqueue.TypedRateLimitingInterface[item]
}

// maxQueued bounds the events waiting; a delivery beyond it is refused (503) until workers catch up.
const maxQueued = 10000

func (q *queue) add(it item) { q.q.Add(it) }

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
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[item](500*time.Millisecond, 30*time.Second),
		workqueue.TypedRateLimitingQueueConfig[item]{Name: "receiver"})
	s.Handler.queue = &queue{q: q}
	defer q.ShutDown()
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

// maxTries bounds the attempts at one event (a registry that does not answer).
const maxTries = 5

func (s *Server) work(ctx context.Context, q workqueue.TypedRateLimitingInterface[item]) {
	log := ctrl.LoggerFrom(ctx).WithName("receiver")
	for {
		it, shutdown := q.Get()
		if shutdown {
			return
		}
		err := s.handle(ctx, it)
		switch {
		case err == nil || errors.Is(err, ErrIgnored):
			q.Forget(it)
		case q.NumRequeues(it) < maxTries-1:
			q.AddRateLimited(it)
		default:
			q.Forget(it)
			log.Info("giving up on a notification event; the next listing covers it", "registry", it.registry.String(),
				"repository", it.event.Repository, "action", string(it.event.Action), "error", err.Error())
		}
		q.Done(it)
	}
}

// handle works off one event under a deadline.
func (s *Server) handle(ctx context.Context, it item) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	reg, err := s.Get(ctx, it.registry)
	if err != nil {
		return err
	}
	e := it.event
	switch e.Action {
	case Delete:
		return s.Handler.Target.Forget(ctx, reg, e.Repository, e.Tag, e.Digest)
	default: // Push, LookAgain: make sure the image is in the inventory
		_, err := s.Handler.Target.Evaluate(ctx, reg, e.Repository, e.Tag, e.Digest)
		return err
	}
}
