package registry

import (
	"context"
	"net/http"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestBackgroundYields: while foreground requests (verification, scans) are being made, background
// requests (listing) get at most half the rate; alone, they get all of it.
func TestBackgroundYields(t *testing.T) {
	clock := time.Unix(1000, 0)
	tr := &politeTransport{limiter: rate.NewLimiter(rate.Inf, 1), background: rate.NewLimiter(1, 1),
		now: func() time.Time { return clock }}
	bg := WithBackground(context.Background())
	req := func(ctx context.Context) *http.Request {
		r, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/v2/", nil)
		return r
	}
	// Alone: no waiting on the background limiter at all (its one token would run out at once).
	for range 5 {
		if err := tr.wait(req(bg).Context()); err != nil {
			t.Fatal(err)
		}
	}
	if tokens := tr.background.TokensAt(time.Now()); tokens < 0.99 {
		t.Fatalf("background requests alone took background tokens (%v left)", tokens)
	}
	// Right after a foreground request, background requests take background tokens too.
	if err := tr.wait(req(context.Background()).Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	if err := tr.wait(req(ctx).Context()); err != nil {
		t.Fatal(err)
	}
	if err := tr.wait(req(ctx).Context()); err == nil {
		t.Fatal("a second background request within the foreground window must wait for the half-rate limiter")
	}
}
