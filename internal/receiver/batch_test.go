package receiver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// countingTarget records what the worker asks of the manager; fail makes the named steps fail
// (a registry error) until cleared.
type countingTarget struct {
	mu       sync.Mutex
	calls    []string
	fail     map[string]bool
	moved    map[string]bool // tags whose push answers ErrRelist
	relisted map[string]int
}

func (c *countingTarget) record(s string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, s)
	if c.fail[s] {
		return errors.New("registry unavailable")
	}
	return nil
}

func (c *countingTarget) Lookup(context.Context, string) (*v1alpha1.Registry, []byte, error) {
	return nil, nil, ErrUnknown
}
func (c *countingTarget) Record(types.NamespacedName, bool, time.Time) {}

func (c *countingTarget) Evaluate(_ context.Context, _ *v1alpha1.Registry, repo, tag, digest string) (string, error) {
	if tag == "" {
		return "", ErrIgnored
	}
	if err := c.record("push " + repo + ":" + tag + "@" + digest); err != nil {
		return "", err
	}
	if c.moved[tag] {
		return digest, fmt.Errorf("%w: moved", ErrRelist)
	}
	return digest, nil
}

func (c *countingTarget) Forget(_ context.Context, _ *v1alpha1.Registry, repo, tag, digest string) error {
	if err := c.record("delete " + repo + ":" + tag + "@" + digest); err != nil {
		return err
	}
	if tag != "" {
		return ErrRelist
	}
	return nil
}

func (c *countingTarget) LookAgain(_ context.Context, _ *v1alpha1.Registry, repo, tag, digest string) error {
	return c.record("look " + repo + ":" + tag + "@" + digest)
}

func (c *countingTarget) Relist(_ context.Context, _ *v1alpha1.Registry, repo string) error {
	return c.record("relist " + repo)
}

func (c *countingTarget) count(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.calls {
		if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

func testServer(t *countingTarget) *Server {
	return &Server{Handler: &Handler{Target: t}, Get: func(_ context.Context, key types.NamespacedName) (*v1alpha1.Registry, error) {
		reg := &v1alpha1.Registry{}
		reg.Namespace, reg.Name = key.Namespace, key.Name
		return reg, nil
	}}
}

// drain works off every queued repository once, as a worker does, and returns the keys that failed.
func drain(t *testing.T, s *Server, q *queue) map[repoKey]*batch {
	t.Helper()
	failed := map[repoKey]*batch{}
	for q.q.Len() > 0 {
		k, _ := q.q.Get()
		if b := q.take(k); b != nil {
			if f, _ := s.handle(context.Background(), k, b); f != nil {
				failed[k] = f
			}
		}
		q.q.Forget(k)
		q.q.Done(k)
	}
	return failed
}

// TestCoalescePerRepository: a burst of deliveries for one repository is worked off as one batch:
// duplicates are one event, a tag pushed three times is resolved once (with the last digest
// announced), two deleted tags and a moved tag cost one listing of the repository together, and
// another repository's events are worked off on their own.
func TestCoalescePerRepository(t *testing.T) {
	tgt := &countingTarget{moved: map[string]bool{"moving": true}}
	s := testServer(tgt)
	q := newQueue()
	reg := types.NamespacedName{Namespace: "ns", Name: "r"}
	for range 3 { // a registry retrying its delivery
		q.add(reg, Event{Action: Push, Repository: "shop/api", Tag: "v1", Digest: "sha256:a"})
	}
	q.add(reg, Event{Action: Push, Repository: "shop/api", Tag: "v1", Digest: "sha256:b"})
	q.add(reg, Event{Action: Push, Repository: "shop/api", Tag: "v1", Digest: "sha256:c"})
	q.add(reg, Event{Action: Push, Repository: "shop/api", Tag: "v2", Digest: "sha256:d"})
	q.add(reg, Event{Action: Push, Repository: "shop/api", Tag: "moving", Digest: "sha256:e"})
	q.add(reg, Event{Action: Delete, Repository: "shop/api", Tag: "old1"})
	q.add(reg, Event{Action: Delete, Repository: "shop/api", Tag: "old2"})
	q.add(reg, Event{Action: Delete, Repository: "shop/api", Digest: "sha256:f"})
	q.add(reg, Event{Action: Push, Repository: "shop/web", Tag: "v1", Digest: "sha256:g"})
	if n := q.q.Len(); n != 2 {
		t.Fatalf("%d queue items for two repositories, want 2", n)
	}
	if q.events != 9 {
		t.Errorf("%d events counted against the queue bound, want 9 distinct", q.events)
	}
	if f := drain(t, s, q); len(f) != 0 {
		t.Fatalf("failed: %v", f)
	}
	for prefix, want := range map[string]int{
		"push shop/api:v1@":             1,
		"push shop/api:v1@sha256:c":     1, // the last digest announced
		"push shop/api:v2@":             1,
		"push shop/api:moving@":         1,
		"delete shop/api:":              3,
		"relist shop/api":               1, // two deleted tags and a move: one listing
		"push shop/web:v1@sha256:g":     1,
		"relist shop/web":               0,
		"look ":                         0,
		"delete shop/api:@sha256:f":     1,
		"delete shop/api:old1@":         1,
		"push shop/api:moving@sha256:e": 1,
	} {
		if got := tgt.count(prefix); got != want {
			t.Errorf("%q: %d calls, want %d (all: %v)", prefix, got, want, tgt.calls)
		}
	}
	if q.events != 0 || len(q.pending) != 0 {
		t.Errorf("after the work: %d events and %d batches left", q.events, len(q.pending))
	}
}

// TestBurstBecomesOneListing: more distinct events for a repository than a batch holds are one
// listing of it, not a request per event, and they count as one against the queue bound.
func TestBurstBecomesOneListing(t *testing.T) {
	tgt := &countingTarget{}
	s := testServer(tgt)
	q := newQueue()
	reg := types.NamespacedName{Namespace: "ns", Name: "r"}
	for i := range maxBatch + 50 {
		q.add(reg, Event{Action: Push, Repository: "ci/builds", Tag: fmt.Sprintf("build-%d", i), Digest: fmt.Sprintf("sha256:%d", i)})
	}
	if q.events != 1 {
		t.Errorf("%d events counted for a collapsed burst, want 1", q.events)
	}
	drain(t, s, q)
	if p, r := tgt.count("push "), tgt.count("relist ci/builds"); p != 0 || r != 1 {
		t.Errorf("a burst of %d pushes: %d evaluations and %d listings, want 0 and 1", maxBatch+50, p, r)
	}
}

// TestRetryOnlyWhatFailed: a step that fails (the registry did not answer) is retried with the
// events that arrived since; the ones that succeeded and the ignored ones are not asked again, and
// a failed listing is retried as a listing.
func TestRetryOnlyWhatFailed(t *testing.T) {
	tgt := &countingTarget{fail: map[string]bool{"push shop/api:v2@sha256:b": true, "relist shop/old": true}}
	s := testServer(tgt)
	q := newQueue()
	reg := types.NamespacedName{Namespace: "ns", Name: "r"}
	q.add(reg, Event{Action: Push, Repository: "shop/api", Tag: "v1", Digest: "sha256:a"})
	q.add(reg, Event{Action: Push, Repository: "shop/api", Tag: "v2", Digest: "sha256:b"})
	q.add(reg, Event{Action: Push, Repository: "shop/api", Digest: "sha256:platform"}) // ignored
	q.add(reg, Event{Action: Delete, Repository: "shop/old", Tag: "x"})
	failed := drain(t, s, q)
	api, old := repoKey{reg, "shop/api"}, repoKey{reg, "shop/old"}
	if len(failed) != 2 || failed[api].size() != 1 || failed[api].events[0].Tag != "v2" || !failed[old].relist {
		t.Fatalf("failed batches %v, want shop/api:v2 and the listing of shop/old", failed)
	}
	// The retry, with a new event for the same repository waiting.
	q.add(reg, Event{Action: LookAgain, Repository: "shop/api", Tag: "v1", Digest: "sha256:a"})
	for k, b := range failed {
		q.putBack(k, b)
		q.q.Add(k)
	}
	tgt.mu.Lock()
	tgt.fail = nil
	tgt.mu.Unlock()
	if f := drain(t, s, q); len(f) != 0 {
		t.Fatalf("the retry failed: %v", f)
	}
	for prefix, want := range map[string]int{
		"push shop/api:v1@":  1,
		"push shop/api:v2@":  2,
		"look shop/api:v1@":  1,
		"relist shop/old":    2,
		"delete shop/old:x@": 1,
	} {
		if got := tgt.count(prefix); got != want {
			t.Errorf("%q: %d calls, want %d (all: %v)", prefix, got, want, tgt.calls)
		}
	}
}
