package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// errBodyStalled is the cancellation cause of a request whose body made no progress.
var errBodyStalled = errors.New("the registry sent no data")

// stallTimer cancels a request's context when a read of its body waits longer than d for a byte.
// It runs only while a Read is blocked: a consumer that pauses between reads (the scanner
// analysing a layer) is not the registry's fault. Unlike a deadline on the whole operation, a large
// blob that keeps arriving is never cut.
type stallTimer struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	d      time.Duration
}

func newStallTimer(parent context.Context, d time.Duration) *stallTimer {
	ctx, cancel := context.WithCancelCause(parent)
	s := &stallTimer{ctx: ctx, cancel: cancel, d: d}
	s.timer = time.AfterFunc(d, func() { cancel(errBodyStalled) })
	s.timer.Stop() // armed by each Read only
	return s
}

// watch hands resp's body over to the timer; a body with nothing to read releases it at once.
func (s *stallTimer) watch(resp *http.Response) {
	if s == nil {
		return
	}
	if resp.Body == nil || resp.Body == http.NoBody || resp.ContentLength == 0 {
		s.release()
		return
	}
	resp.Body = &stallBody{rc: resp.Body, s: s}
}

// release stops the timer and frees the request's context.
func (s *stallTimer) release() {
	if s == nil {
		return
	}
	s.timer.Stop()
	s.cancel(nil)
}

// stallBody is a response body read under a stallTimer.
type stallBody struct {
	rc io.ReadCloser
	s  *stallTimer
}

// Read reads with the stall timer armed; a read cut by it fails with ErrTimeout.
func (b *stallBody) Read(p []byte) (int, error) {
	b.s.timer.Reset(b.s.d)
	n, err := b.rc.Read(p)
	b.s.timer.Stop()
	if err != nil && err != io.EOF && errors.Is(context.Cause(b.s.ctx), errBodyStalled) {
		return n, fmt.Errorf("%w: %w for %s while a response body was read", ErrTimeout, errBodyStalled, b.s.d)
	}
	return n, err
}

// Close closes the body and releases the timer.
func (b *stallBody) Close() error {
	err := b.rc.Close()
	b.s.release()
	return err
}
