package registry

import (
	"context"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// adaptiveRate turns a registry's overload answers into a slower request rate for the whole Registry,
// not only a retry of the one request that got them (additive increase, multiplicative decrease, as
// TCP congestion control does):
//   - a 429 Too Many Requests or 503 Service Unavailable halves the rate of every request to the
//     Registry (at least minRate) and, when it carries Retry-After (RFC 9110 section 10.2.3), holds
//     every request until that time, so concurrent workers do not keep hitting a registry that asked
//     them to stop;
//   - each answer that is not an overload raises the rate by ceiling/rampSteps, back up to the
//     Registry's spec.requests.perSecond (the ceiling), which is never exceeded.
//
// A registry that limits at 50 requests/s under a ceiling of 100 thus settles around 50, paying a
// handful of 429s per ramp instead of one in two requests.
type adaptiveRate struct {
	limiters []*rate.Limiter // the foreground limiter first, then the background one at half its rate
	ceiling  rate.Limit
	now      func() time.Time
	name     string // metrics label: namespace/name

	mu          sync.Mutex
	current     rate.Limit
	pausedUntil time.Time
}

// minRate is the floor of the adaptive rate: one request every two seconds.
const minRate = rate.Limit(0.5)

// rampSteps is how many successful answers bring the rate from the floor back to the ceiling.
const rampSteps = 50

func newAdaptiveRate(ceiling rate.Limit, now func() time.Time, limiters ...*rate.Limiter) *adaptiveRate {
	return &adaptiveRate{limiters: limiters, ceiling: ceiling, current: ceiling, now: now}
}

// overloaded reports whether code asks clients to slow down.
func overloaded(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable
}

// observe adjusts the rate after an answer with status code; retryAfter is the delay the answer's
// Retry-After header asked for (0 when it had none).
func (a *adaptiveRate) observe(code int, retryAfter time.Duration) {
	if a == nil || code == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if overloaded(code) {
		a.set(max(minRate, a.current/2))
		if retryAfter > 0 {
			if until := a.now().Add(retryAfter); until.After(a.pausedUntil) {
				a.pausedUntil = until
			}
		}
		return
	}
	if code >= 500 || a.current >= a.ceiling {
		return // other server errors are retried by the transport but say nothing about the rate
	}
	a.set(min(a.ceiling, a.current+a.ceiling/rampSteps))
}

// set applies r to the limiters (the background one at half of it). Called with mu held.
func (a *adaptiveRate) set(r rate.Limit) {
	a.current = r
	if a.name != "" {
		requestRate.WithLabelValues(a.name).Set(float64(r))
	}
	for i, l := range a.limiters {
		if i > 0 {
			r = max(minRate/2, a.current/2)
		}
		l.SetLimit(r)
	}
}

// Limit is the current request rate (requests per second).
func (a *adaptiveRate) Limit() rate.Limit {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current
}

// hold waits until a pause a Retry-After asked for has passed, or ctx ends.
func (a *adaptiveRate) hold(ctx context.Context) error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	until := a.pausedUntil
	a.mu.Unlock()
	if d := until.Sub(a.now()); d > 0 {
		return sleep(ctx, d)
	}
	return nil
}
