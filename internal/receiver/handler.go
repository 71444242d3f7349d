package receiver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// PathPrefix starts every receiver path: PathPrefix + 32 hex characters derived from the Registry's
// UID (Path), hard to guess from outside the cluster and shown in status.notifications.path. The
// token is what authenticates a delivery.
const PathPrefix = "/receive/"

// Path is the receiver path of the Registry with this UID.
func Path(uid types.UID) string {
	h := sha256.Sum256([]byte("portcullis-receiver:" + string(uid)))
	return PathPrefix + hex.EncodeToString(h[:16])
}

// SignatureHeader carries the HMAC-SHA256 of the body, keyed with the token, as `sha256=<hex>`
// (GitHub's X-Hub-Signature-256 scheme): how the generic payload is authenticated.
const SignatureHeader = "X-Portcullis-Signature"

// MaxBody is the largest delivery accepted, in bytes (Distribution batches events; 1 MiB holds
// about a thousand).
const MaxBody = 1 << 20

// ErrUnknown: no Registry has this receiver path (404).
var ErrUnknown = errors.New("no Registry receives notifications at this path")

// Target is what the receiver needs of the manager (controller.Wiring provides it).
type Target interface {
	// Lookup returns the Registry whose receiver path is path and the token of its
	// spec.notifications Secret (ErrUnknown when none).
	Lookup(ctx context.Context, path string) (*v1alpha1.Registry, []byte, error)
	// Evaluate puts the image a pushed tag points at into the inventory now, asking the registry
	// what the tag points at (digest, the payload's claim, may save the request when the inventory
	// agrees). It returns ErrRelist when the tag moved off another image of the inventory.
	Evaluate(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) (string, error)
	// Forget removes what the registry confirms is gone: a digest is checked and its image removed
	// when gone; a deleted tag is ErrRelist (the repository's listing takes it off its image).
	Forget(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) error
	// LookAgain has the image (by tag or digest) verified and judged again, as if it had changed,
	// without a listing: what a Harbor scan event asks for. An image not in the inventory is
	// put there as Evaluate does.
	LookAgain(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) error
	// Relist lists the repository now and applies it as a listing pass does (moves recorded, tags
	// taken off, images gone removed, new ones added).
	Relist(ctx context.Context, reg *v1alpha1.Registry, repository string) error
	// Record counts a delivery for the Registry's status: accepted or refused.
	Record(reg types.NamespacedName, accepted bool, at time.Time)
}

// Handler serves the receiver endpoint. Deliveries are answered at once (202) and their events
// worked off by the Server's workers, coalesced per repository: the events of a burst for one
// repository wait as one batch, the same event twice is one, a tag pushed several times is
// resolved once, deleted tags and moves cost one listing of the repository together, and a batch
// past 256 distinct events is one listing of the repository instead.
type Handler struct {
	Target Target
	// PerSecond and Burst bound deliveries per Registry (default 20 and 100); more are refused
	// with 429 and Retry-After, so one flooding registry never starves the others.
	PerSecond float64
	Burst     int

	mu       sync.Mutex
	limiters map[types.NamespacedName]*rate.Limiter
	queue    *queue
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a notification", http.StatusMethodNotAllowed)
		return
	}
	reg, token, err := h.Target.Lookup(r.Context(), r.URL.Path)
	switch {
	case errors.Is(err, ErrUnknown):
		http.NotFound(w, r)
		return
	case err != nil:
		http.Error(w, "the receiver cannot read its configuration", http.StatusServiceUnavailable)
		return
	}
	key := types.NamespacedName{Namespace: reg.Namespace, Name: reg.Name}
	refuse := func(code int, msg string) {
		h.Target.Record(key, false, time.Now())
		received.WithLabelValues(key.String(), "refused").Inc()
		http.Error(w, msg, code)
	}
	if !h.limiter(key).Allow() {
		w.Header().Set("Retry-After", "1")
		refuse(http.StatusTooManyRequests, "too many deliveries for this Registry")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("a delivery holds at most %d bytes", MaxBody))
			return
		}
		refuse(http.StatusBadRequest, "reading the delivery failed")
		return
	}
	bearer, signed := authenticated(r.Header, body, token)
	if !bearer && !signed {
		refuse(http.StatusUnauthorized, "missing or wrong token or signature")
		return
	}
	format, events, err := Parse(r.Header, body)
	if err != nil {
		refuse(http.StatusBadRequest, err.Error())
		return
	}
	if format == FormatGeneric && !signed {
		refuse(http.StatusUnauthorized, "a generic payload must be signed ("+SignatureHeader+")")
		return
	}
	if h.queue == nil || h.queue.full() {
		w.Header().Set("Retry-After", "5")
		refuse(http.StatusServiceUnavailable, "the receiver is busy; the registry retries")
		return
	}
	h.Target.Record(key, true, time.Now())
	received.WithLabelValues(key.String(), "accepted").Inc()
	for _, e := range events {
		h.queue.add(key, e)
	}
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, strconv.Itoa(len(events))+" events accepted\n")
}

// authenticated checks the delivery's credentials against token: `Authorization: Bearer <token>`
// (or the bare token, as Harbor's Auth Header may send it) and/or SignatureHeader. Both compare in
// constant time; an empty token authenticates nothing.
func authenticated(hd http.Header, body, token []byte) (bearer, signed bool) {
	if len(token) == 0 {
		return false, false
	}
	if a := hd.Get("Authorization"); a != "" {
		a = strings.TrimSpace(strings.TrimPrefix(a, "Bearer "))
		bearer = subtle.ConstantTimeCompare([]byte(a), token) == 1
	}
	if s, ok := strings.CutPrefix(hd.Get(SignatureHeader), "sha256="); ok {
		mac := hmac.New(sha256.New, token)
		mac.Write(body)
		want := hex.EncodeToString(mac.Sum(nil))
		signed = subtle.ConstantTimeCompare([]byte(strings.ToLower(s)), []byte(want)) == 1
	}
	return bearer, signed
}

func (h *Handler) limiter(key types.NamespacedName) *rate.Limiter {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.limiters == nil {
		h.limiters = map[types.NamespacedName]*rate.Limiter{}
	}
	l := h.limiters[key]
	if l == nil {
		per, burst := h.PerSecond, h.Burst
		if per <= 0 {
			per = 20
		}
		if burst <= 0 {
			burst = 100
		}
		l = rate.NewLimiter(rate.Limit(per), burst)
		h.limiters[key] = l
	}
	return l
}

// ErrRelist wraps a Target answer that the repository must be listed (a tag moved or was deleted):
// the worker lists it once for all the batch's events that ask.
var ErrRelist = errors.New("the repository must be listed again")

// ErrIgnored wraps a Target error that is final: the event names an image the Registry does not
// watch or no policy selects. It is not retried.
var ErrIgnored = errors.New("ignored")
