package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// politeTransport is the HTTP layer under go-containerregistry for one Registry: a request rate
// limit, retries of 429/502/503/504 that honour Retry-After (RFC 9110 section 10.2.3) and otherwise
// back off exponentially, a size limit on every response body, and a request counter.
type politeTransport struct {
	base       http.RoundTripper
	limiter    *rate.Limiter
	maxBody    int64
	maxRetries int
	retryBase  time.Duration
	maxWait    time.Duration
	registry   string // metrics label: namespace/name
	// plainHTTP: the Registry's URL is http://. go-containerregistry still tries https first when it
	// pings such a registry; that attempt's failure is expected and not counted.
	plainHTTP bool
	now       func() time.Time
	// noReferrers holds when the referrers API last answered 404 (Unix nanoseconds), 0 when it last
	// answered 200 or was never asked.
	noReferrers atomic.Int64
	// background limits requests made with WithBackground to half the rate while foreground
	// requests (verification, scanning) were made in the last second; lastForeground holds when
	// (Unix nanoseconds).
	background     *rate.Limiter
	lastForeground atomic.Int64
	// adaptive lowers both limiters' rates when the registry answers 429/503 and holds every request
	// until a Retry-After has passed (nil: fixed rate).
	adaptive *adaptiveRate
	// stall fails a body read that gets no byte for this long (0: never).
	stall time.Duration
}

// backgroundKey marks a request context as background work.
type backgroundKey struct{}

// WithBackground marks ctx's requests as background work (listing): while verification or scanning
// requests are being made, background requests get at most half of the Registry's rate, so new
// digests get verdicts while a large registry is still being listed; alone, they get all of it.
func WithBackground(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// foregroundWindow is how long after a foreground request background requests yield.
const foregroundWindow = time.Second

// wait takes a token for req: background requests also take one from the half-rate limiter while
// foreground work is recent.
func (t *politeTransport) wait(ctx context.Context) error {
	if err := t.adaptive.hold(ctx); err != nil {
		return err
	}
	now := t.now().UnixNano()
	if ctx.Value(backgroundKey{}) == nil {
		t.lastForeground.Store(now)
	} else if t.background != nil && now-t.lastForeground.Load() < int64(foregroundWindow) {
		if err := t.background.Wait(ctx); err != nil {
			return err
		}
	}
	return t.limiter.Wait(ctx)
}

func (t *politeTransport) RoundTrip(req *http.Request) (_ *http.Response, err error) {
	ctx := req.Context()
	var stall *stallTimer
	if t.stall > 0 {
		// Cancelled when a body read makes no progress for t.stall; released when the body is
		// closed, or here when no body is handed out.
		stall = newStallTimer(ctx, t.stall)
		req = req.WithContext(stall.ctx)
		defer func() {
			if err != nil {
				stall.release()
			}
		}()
	}
	for attempt := 0; ; attempt++ {
		if err := t.wait(ctx); err != nil {
			return nil, fmt.Errorf("%w: waiting for the request rate limit: %w", ErrTimeout, err)
		}
		resp, err := t.base.RoundTrip(req)
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		if !(t.plainHTTP && err != nil && req.URL.Scheme == "https") {
			requestsTotal.WithLabelValues(t.registry, requestKind(req.URL.Path), codeLabel(code)).Inc()
		}
		if err != nil {
			return nil, err
		}
		t.observeReferrers(req.URL.Path, resp.StatusCode)
		retryAfter, _ := retryAfterDelay(resp.Header.Get("Retry-After"), t.now())
		t.adaptive.observe(resp.StatusCode, retryAfter)
		if retryable(resp.StatusCode) && attempt < t.maxRetries && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
			wait := t.backoff(attempt, resp.Header.Get("Retry-After"))
			deadline, hasDeadline := ctx.Deadline()
			// A wait past the pass's deadline would only turn a rate limit into a timeout.
			if wait <= t.maxWait && (!hasDeadline || t.now().Add(wait).Before(deadline)) {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				_ = resp.Body.Close()
				if err := sleep(ctx, wait); err != nil {
					return nil, fmt.Errorf("%w: waiting %s to retry after HTTP %d: %w", ErrTimeout, wait, resp.StatusCode, err)
				}
				continue
			}
		}
		if resp.StatusCode >= 400 {
			// An error body is the registry's text: it never reaches a condition, event or log.
			withholdErrorBody(resp)
		}
		if req.Context().Value(relayBlob{}) != nil {
			// A layer for the scanner (through the Relay): bounded by the relay and the scanner's
			// image size limits and checked against its digest, not by the manifest-sized limit.
			stall.watch(resp)
			return resp, nil
		}
		if req.Method != http.MethodHead && resp.ContentLength > t.maxBody {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("%w: %s %s: Content-Length %d over the %d-byte limit", ErrTooLarge, req.Method, req.URL.Path, resp.ContentLength, t.maxBody)
		}
		resp.Body = &limitedBody{rc: resp.Body, remaining: t.maxBody, limit: t.maxBody}
		stall.watch(resp)
		return resp, nil
	}
}

// observeReferrers notes whether the registry has the referrers API
// (`GET /v2/<name>/referrers/<digest>`, distribution-spec "Listing Referrers"): a 404 there means
// it has none (clients then read the `sha256-<hex>` fallback tag), a 200 that it has.
func (t *politeTransport) observeReferrers(path string, code int) {
	if !strings.HasPrefix(path, "/v2/") || !strings.Contains(path, "/referrers/") {
		return
	}
	switch code {
	case http.StatusNotFound:
		t.noReferrers.Store(t.now().UnixNano())
	case http.StatusOK:
		t.noReferrers.Store(0)
	}
}

// relayBlob marks the context of a blob read for the scanner through the Relay.
type relayBlob struct{}

func retryable(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// backoff is the Retry-After delay when the header gives one (seconds or an HTTP date), else
// retryBase * 2^attempt.
func (t *politeTransport) backoff(attempt int, retryAfter string) time.Duration {
	if d, ok := retryAfterDelay(retryAfter, t.now()); ok {
		return d
	}
	return t.retryBase << attempt
}

// retryAfterDelay reads a Retry-After header value, delay-seconds or an HTTP date (RFC 9110 section
// 10.2.3); ok is false when there is none or it cannot be read.
func retryAfterDelay(v string, now time.Time) (d time.Duration, ok bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(0, at.Sub(now)), true
	}
	return 0, false
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// limitedBody fails with ErrTooLarge once more than limit bytes were read, instead of silently
// truncating (which would surface as a confusing JSON or digest error).
type limitedBody struct {
	rc               io.ReadCloser
	remaining, limit int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.remaining < 0 {
		return 0, fmt.Errorf("%w: body over the %d-byte limit", ErrTooLarge, b.limit)
	}
	if int64(len(p)) > b.remaining+1 {
		p = p[:b.remaining+1]
	}
	n, err := b.rc.Read(p)
	b.remaining -= int64(n)
	if b.remaining < 0 {
		return 0, fmt.Errorf("%w: body over the %d-byte limit", ErrTooLarge, b.limit)
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// maxErrorBody bounds what is read of an error response to find its error codes.
const maxErrorBody = 64 << 10

// withholdErrorBody replaces an error response's body with one that keeps only what callers act
// on: the distribution-spec error codes (`{"errors":[{"code":"UNAUTHORIZED",...}]}`, see
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes), each with
// the HTTP status text as its message. The registry's own messages and details, and any body that
// is not such a document (an HTML error page, a proxy's text), are dropped: a hostile or
// misconfigured registry cannot have its text copied into conditions, events or logs.
func withholdErrorBody(resp *http.Response) {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
	var doc struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	type diagnostic struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	var out struct {
		Errors []diagnostic `json:"errors"`
	}
	if json.Unmarshal(raw, &doc) == nil {
		for _, e := range doc.Errors {
			if errorCode(e.Code) {
				out.Errors = append(out.Errors, diagnostic{Code: e.Code, Message: strings.ToLower(http.StatusText(resp.StatusCode))})
			}
			if len(out.Errors) == 8 {
				break
			}
		}
	}
	body := []byte{}
	if len(out.Errors) > 0 {
		body, _ = json.Marshal(out)
		resp.Header.Set("Content-Type", "application/json")
	} else {
		resp.Header.Del("Content-Type")
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
}

// errorCode reports whether s looks like a distribution-spec error code (upper-case letters and
// underscores, as MANIFEST_UNKNOWN), so only such tokens are kept.
func errorCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < 'A' || c > 'Z') && c != '_' {
			return false
		}
	}
	return true
}
