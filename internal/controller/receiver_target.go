package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/receiver"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// tokenKey is the key of the spec.notifications Secret that holds the receiver token.
const tokenKey = "token"

// receiverTarget is receiver.Target over the manager: Registries from the cache, tokens read
// uncached once per Secret version, images put into the inventory by onDemand.
type receiverTarget struct {
	od *onDemand
	// api reads Secrets uncached.
	api client.Reader
	// recorder reports refused deliveries on the Registry, at most once per refusedEventEvery.
	recorder events.EventRecorder

	// lookAgain feeds the ImageAttestation controller (a channel source): LookAgain.
	lookAgain chan event.GenericEvent

	mu     sync.Mutex
	tokens map[types.NamespacedName]cachedToken
	counts map[types.NamespacedName]*deliveries
}

type cachedToken struct {
	resourceVersion string
	token           []byte
}

// deliveries are a Registry's counters since the manager started.
type deliveries struct {
	accepted, refused int64
	last              time.Time
	// reported is the refused count the last event reported, at reportedAt.
	reported   int64
	reportedAt time.Time
}

// refusedEventEvery bounds the events about refused deliveries: one per Registry per minute at most,
// however many are refused (a flood of forged deliveries is one event a minute).
const refusedEventEvery = time.Minute

var _ receiver.Target = (*receiverTarget)(nil)

// lookAgainBuffer is how many LookAgain requests wait for the ImageAttestation controller before
// a receiver worker waits for room.
const lookAgainBuffer = 1024

func newReceiverTarget(od *onDemand, api client.Reader) *receiverTarget {
	return &receiverTarget{od: od, api: api, lookAgain: make(chan event.GenericEvent, lookAgainBuffer), tokens: map[types.NamespacedName]cachedToken{}, counts: map[types.NamespacedName]*deliveries{}}
}

// Lookup implements receiver.Target.
func (t *receiverTarget) Lookup(ctx context.Context, path string) (*v1alpha1.Registry, []byte, error) {
	regs := &v1alpha1.RegistryList{}
	if err := t.od.client.List(ctx, regs, client.MatchingFields{indexReceiverPath: path}); err != nil {
		return nil, nil, err
	}
	if len(regs.Items) != 1 {
		return nil, nil, receiver.ErrUnknown
	}
	reg := &regs.Items[0]
	token, err := t.token(ctx, reg)
	if err != nil {
		return nil, nil, err
	}
	return reg, token, nil
}

// token reads the Registry's receiver token, from the API server only when the Secret's version
// changed (its metadata comes from the manager's metadata cache). A missing Secret or key is an
// empty token, which authenticates nothing.
func (t *receiverTarget) token(ctx context.Context, reg *v1alpha1.Registry) ([]byte, error) {
	key := types.NamespacedName{Namespace: reg.Namespace, Name: reg.Spec.Notifications.SecretRef.Name}
	rv, err := secretVersion(ctx, t.od.client, key)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	}
	t.mu.Lock()
	c, ok := t.tokens[key]
	t.mu.Unlock()
	if ok && c.resourceVersion == rv {
		return c.token, nil
	}
	s := &corev1.Secret{}
	switch err := t.api.Get(ctx, key, s); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	}
	c = cachedToken{resourceVersion: s.ResourceVersion, token: s.Data[tokenKey]}
	t.mu.Lock()
	t.tokens[key] = c
	t.mu.Unlock()
	return c.token, nil
}

// Evaluate implements receiver.Target: an image the Registry does not watch or no policy selects
// is receiver.ErrIgnored (final, not retried). A push by digest alone (a platform manifest of an
// index, a signature or SBOM stored as a referrer, an untagged image) is not an image the listing
// would judge either: it is ignored, as are signature, attestation and SBOM tags. The payload's
// digest is only a claim: when the inventory already says tag → digest nothing is asked (a
// redelivery, an event for a push the listing saw first); otherwise the tag is resolved and what
// the registry answers is evaluated, so an event that arrives late for a tag that moved since is
// harmless. A tag that moved off another image is receiver.ErrRelist.
func (t *receiverTarget) Evaluate(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) (string, error) {
	if tag == "" {
		return "", fmt.Errorf("%w: a push of %s@%s by digest alone", receiver.ErrIgnored, repository, digest)
	}
	var announced *v1alpha1.ImageAttestation // the announced digest's, when in the inventory
	if digest != "" {
		ia, err := t.inInventory(ctx, reg, repository, digest)
		if err == nil && ia != nil && slices.Contains(ia.Spec.Tags, tag) {
			return digest, nil
		}
		announced = ia
	}
	d, moved, err := t.od.put(ctx, reg, repository, tag, "")
	switch {
	case errors.Is(err, errNotGoverned):
		return "", fmt.Errorf("%w: %w", receiver.ErrIgnored, err)
	case errors.Is(err, registry.ErrNotFound) && digest != "":
		// CNCF Distribution sends the push event when the manifest is stored, before the tag is
		// written (the notification listener wraps the manifest store): a tag that is not there
		// yet is retried with backoff (receiver's maxTries); one deleted since (a late or replayed
		// event) is given up after them, and its delete event or the listing settles it.
		return "", fmt.Errorf("%s:%s (announced as %s) is not in the registry yet: %w", repository, tag, digest, err)
	case errors.Is(err, registry.ErrNotFound):
		return "", fmt.Errorf("%w: %s:%s is not in the registry", receiver.ErrIgnored, repository, tag)
	case err == nil && moved:
		return d, fmt.Errorf("%w: %s:%s moved to %s", receiver.ErrRelist, repository, tag, d)
	case err == nil && digest != "" && d != digest && announced == nil:
		// The registry still has the tag on an earlier digest (the same race: the event came before
		// the tag was written): what it answers was judged; the announced one is retried. An
		// announced digest already in the inventory is an older event arriving late: done.
		return d, fmt.Errorf("%s:%s is on %s, not yet on %s as announced", repository, tag, d, digest)
	}
	return d, err
}

// inInventory returns reg's ImageAttestation of repository@digest from the cache (nil when none).
func (t *receiverTarget) inInventory(ctx context.Context, reg *v1alpha1.Registry, repository, digest string) (*v1alpha1.ImageAttestation, error) {
	ia := &v1alpha1.ImageAttestation{}
	err := t.od.client.Get(ctx, client.ObjectKey{Namespace: reg.Namespace, Name: imageAttestationName(reg.Name, repository, digest)}, ia)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	case ia.Spec.RegistryRef.Name != reg.Name || ia.Spec.Repository != repository || ia.Spec.Digest != digest:
		return nil, nil
	}
	return ia, nil
}

// Forget implements receiver.Target: a digest the registry no longer has loses its
// ImageAttestation; a deleted tag is receiver.ErrRelist (the listing takes it off its image).
func (t *receiverTarget) Forget(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) error {
	if digest != "" {
		if err := t.od.forgetDigest(ctx, reg, repository, digest); err != nil {
			return err
		}
	}
	if tag != "" {
		return fmt.Errorf("%w: %s:%s deleted", receiver.ErrRelist, repository, tag)
	}
	return nil
}

// LookAgain implements receiver.Target: the image's ImageAttestation is queued for the
// ImageAttestation controller as if it had changed (no API write): its referrers are read again,
// so a signature, attestation or SBOM added since is seen, and its verdict is computed again. An
// image not in the inventory is evaluated as a push is (by tag), or left to the listing (by digest
// alone).
func (t *receiverTarget) LookAgain(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) error {
	if digest != "" {
		ia, err := t.inInventory(ctx, reg, repository, digest)
		if err != nil {
			return err
		}
		if ia != nil {
			return t.requeue(ctx, ia)
		}
	}
	_, err := t.Evaluate(ctx, reg, repository, tag, "")
	return err
}

// requeue hands ia to the ImageAttestation controller's queue (its channel source).
func (t *receiverTarget) requeue(ctx context.Context, ia *v1alpha1.ImageAttestation) error {
	if t.lookAgain == nil {
		return nil
	}
	select {
	case t.lookAgain <- event.GenericEvent{Object: ia}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Relist implements receiver.Target.
func (t *receiverTarget) Relist(ctx context.Context, reg *v1alpha1.Registry, repository string) error {
	if t.od.relist == nil {
		return nil
	}
	return t.od.relist(ctx, reg, repository)
}

// Record implements receiver.Target.
func (t *receiverTarget) Record(reg types.NamespacedName, accepted bool, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.counts[reg]
	if d == nil {
		d = &deliveries{}
		t.counts[reg] = d
	}
	if accepted {
		d.accepted++
		d.last = at
	} else {
		d.refused++
	}
}

// statusEvery is how often the receiver's counters reach the Registries' status.
const statusEvery = 10 * time.Second

// Start writes status.notifications of every Registry with spec.notifications every statusEvery
// when it changed (the path at once, the counters as deliveries come): a merge patch of that field
// only. It is a leader-elected Runnable.
func (t *receiverTarget) Start(ctx context.Context) error {
	tick := time.NewTicker(statusEvery)
	defer tick.Stop()
	for {
		t.writeStatus(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (t *receiverTarget) NeedLeaderElection() bool { return true }

func (t *receiverTarget) writeStatus(ctx context.Context) {
	regs := &v1alpha1.RegistryList{}
	if err := t.od.client.List(ctx, regs); err != nil {
		return
	}
	for i := range regs.Items {
		reg := &regs.Items[i]
		if reg.Spec.Notifications == nil {
			continue
		}
		key := types.NamespacedName{Namespace: reg.Namespace, Name: reg.Name}
		want := v1alpha1.NotificationsStatus{Path: receiver.Path(reg.UID)}
		var newlyRefused int64
		t.mu.Lock()
		if d := t.counts[key]; d != nil {
			want.Accepted, want.Refused = d.accepted, d.refused
			if !d.last.IsZero() {
				want.LastReceivedTime = &metav1.Time{Time: d.last.Truncate(time.Second)}
			}
			if d.refused > d.reported && time.Since(d.reportedAt) >= refusedEventEvery {
				newlyRefused, d.reported, d.reportedAt = d.refused-d.reported, d.refused, time.Now()
			}
		}
		t.mu.Unlock()
		if newlyRefused > 0 && t.recorder != nil {
			t.recorder.Eventf(reg, nil, corev1.EventTypeWarning, "NotificationsRefused", "Receive",
				"%d deliveries refused (a wrong token or signature, an oversize or malformed body, or over the rate limit); "+
					"portcullis_receiver_deliveries_total counts them", newlyRefused)
		}
		if have := reg.Status.Notifications; have != nil && have.Path == want.Path && have.Accepted == want.Accepted && have.Refused == want.Refused {
			continue
		}
		base := reg.DeepCopy()
		reg = reg.DeepCopy()
		reg.Status.Notifications = &want
		if err := t.od.client.Status().Patch(ctx, reg, client.MergeFrom(base)); err != nil {
			ctrl.LoggerFrom(ctx).V(1).Info("writing the receiver status", "registry", key.String(), "error", err.Error())
		}
	}
}

// forgetDigest removes repository@digest from reg's inventory when the registry confirms it is gone:
// one HEAD, and on 404 its ImageAttestation is deleted. Nothing is removed on a registry error.
func (o *onDemand) forgetDigest(ctx context.Context, reg *v1alpha1.Registry, repository, digest string) error {
	c, out, ok, err := o.access.client(ctx, reg)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("the Registry %s/%s cannot be reached as configured: %s", reg.Namespace, reg.Name, out.message)
	}
	found, err := c.Exists(ctx, repository, digest)
	if err != nil {
		c.Forget(err)
		return err
	}
	if found {
		return nil
	}
	ias, err := o.repositoryImages(ctx, reg, repository)
	if err != nil {
		return err
	}
	for i := range ias {
		if ias[i].Spec.Digest == digest {
			if err := o.client.Delete(ctx, &ias[i]); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
	}
	return nil
}
