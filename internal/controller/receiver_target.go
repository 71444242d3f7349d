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

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/receiver"
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

func newReceiverTarget(od *onDemand, api client.Reader) *receiverTarget {
	return &receiverTarget{od: od, api: api, tokens: map[types.NamespacedName]cachedToken{}, counts: map[types.NamespacedName]*deliveries{}}
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
// would judge either: it is ignored, as are signature, attestation and SBOM tags.
func (t *receiverTarget) Evaluate(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) (string, error) {
	if tag == "" {
		return "", fmt.Errorf("%w: a push of %s@%s by digest alone", receiver.ErrIgnored, repository, digest)
	}
	if digest != "" {
		// The inventory already says tag → digest (a delivery the registry sent again, an event
		// for a push the listing saw first): nothing to check, no request.
		ia := &v1alpha1.ImageAttestation{}
		err := t.od.client.Get(ctx, client.ObjectKey{Namespace: reg.Namespace, Name: imageAttestationName(reg.Name, repository, digest)}, ia)
		if err == nil && ia.Spec.Repository == repository && ia.Spec.Digest == digest && slices.Contains(ia.Spec.Tags, tag) {
			return digest, nil
		}
	}
	d, err := t.od.evaluate(ctx, reg, repository, tag, digest)
	if errors.Is(err, errNotGoverned) {
		return "", fmt.Errorf("%w: %w", receiver.ErrIgnored, err)
	}
	return d, err
}

// Forget implements receiver.Target.
func (t *receiverTarget) Forget(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) error {
	return t.od.forget(ctx, reg, repository, tag, digest)
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

// forget removes from reg's inventory what the registry confirms is gone. A digest is checked with
// one HEAD (404: its ImageAttestation is deleted). A tag, which other digests' ImageAttestations may
// carry, is settled by listing its repository now (relist: one tags request and a HEAD per tag), as
// the next pass would: the tag leaves the ImageAttestations that carry it, one left with no tag is
// deleted, a tag that moved is recorded. Nothing is removed on a registry error.
func (o *onDemand) forget(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) error {
	if digest != "" {
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
		if !found {
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
	}
	if tag == "" || o.relist == nil {
		return nil
	}
	return o.relist(ctx, reg, repository)
}
