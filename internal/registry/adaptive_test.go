package registry

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestOverloadHoldsTheWholeRegistry: a 429 with Retry-After on one repository holds the requests of
// every other worker of the Registry until that time, not only the retry of the request that got it,
// and halves the Registry's request rate.
func TestOverloadHoldsTheWholeRegistry(t *testing.T) {
	fs := newFaultServer(t)
	fs.push(t, "app", "v1", randomImage(t))
	fs.push(t, "other", "v1", randomImage(t))
	var mu sync.Mutex
	var armed bool
	var limitedAt, otherAt time.Time
	limited := make(chan struct{})
	fs.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !armed:
		case r.URL.Path == "/v2/app/tags/list" && limitedAt.IsZero():
			limitedAt = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			close(limited)
			return true
		case r.URL.Path == "/v2/other/tags/list":
			otherAt = time.Now()
		}
		return false
	})
	c := fs.client(t, func(cfg *Config) { cfg.RequestsPerSecond = 100 })
	if _, err := c.Tags(context.Background(), "app"); err != nil {
		t.Fatal(err) // the ping and token first, so that only tags requests follow
	}
	mu.Lock()
	armed = true
	mu.Unlock()
	errs := make(chan error, 2)
	go func() { _, err := c.Tags(context.Background(), "app"); errs <- err }()
	<-limited
	for c.transport.adaptive.Limit() >= 100 { // until the client has read the 429
		time.Sleep(time.Millisecond)
	}
	go func() {
		// Straight through the Registry's transport: go-containerregistry may serialize its own calls.
		req, _ := http.NewRequest(http.MethodGet, fs.URL+"/v2/other/tags/list", nil)
		resp, err := c.transport.RoundTrip(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		errs <- err
	}()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := c.transport.adaptive.Limit(); got >= 100 {
		t.Fatalf("rate after a 429 and two successes: %v, want below the ceiling 100", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := otherAt.Sub(limitedAt); gap < 900*time.Millisecond {
		t.Fatalf("another repository's request reached the registry %s after a 429 with Retry-After: 1", gap)
	}
}

// TestAdaptiveRate: 429/503 halve the rate down to a floor; other answers raise it back to the
// ceiling and never past it; other 5xx answers change nothing.
func TestAdaptiveRate(t *testing.T) {
	fg, bg := rate.NewLimiter(100, 100), rate.NewLimiter(50, 50)
	a := newAdaptiveRate(100, time.Now, fg, bg)
	a.observe(http.StatusTooManyRequests, 0)
	if a.Limit() != 50 || fg.Limit() != 50 || bg.Limit() != 25 {
		t.Fatalf("after one 429: %v (limiters %v, %v), want 50 (50, 25)", a.Limit(), fg.Limit(), bg.Limit())
	}
	a.observe(http.StatusServiceUnavailable, 0)
	if a.Limit() != 25 {
		t.Fatalf("after a 503: %v, want 25", a.Limit())
	}
	for range 20 {
		a.observe(http.StatusTooManyRequests, 0)
	}
	if a.Limit() != minRate {
		t.Fatalf("after many 429s: %v, want the floor %v", a.Limit(), minRate)
	}
	a.observe(http.StatusInternalServerError, 0)
	a.observe(http.StatusBadGateway, 0)
	if a.Limit() != minRate {
		t.Fatalf("a 500 or 502 moved the rate to %v", a.Limit())
	}
	for range rampSteps - 1 {
		a.observe(http.StatusOK, 0)
	}
	if a.Limit() >= 100 {
		t.Fatalf("back at the ceiling after only %d successes", rampSteps-1)
	}
	for range 10 {
		a.observe(http.StatusNotFound, 0)
	}
	if a.Limit() != 100 || fg.Limit() != 100 || bg.Limit() != 50 {
		t.Fatalf("after successes: %v (limiters %v, %v), want the ceiling 100 (100, 50)", a.Limit(), fg.Limit(), bg.Limit())
	}
}
