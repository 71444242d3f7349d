package admission

import (
	"context"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Evaluator puts repository@digest of reg (tag: the reference's tag, "" for a reference by digest)
// into the inventory now, so the controllers verify, scan and judge it ahead of the next listing; it
// returns the digest (controller.Wiring.Evaluate).
type Evaluator func(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) (string, error)

// pollEvery is how often a waiting webhook looks at the cache for the verdicts it waits for.
const pollEvery = 100 * time.Millisecond

// judged is one image of a request: its reference, what the inventory knows, and the decision.
type judged struct {
	ref      Reference
	cov      []Coverage
	decision ImageDecision
}

// awaitVerdicts waits, for the images some policy lets wait (WaitFor), for their verdicts: each such
// image not in the inventory is evaluated on demand (Evaluate), then the cache is read again every
// pollEvery until every such image is decided by a verdict or the longest wait has passed; items
// then hold the last decisions. A tag is not resolved again while waiting: the digest it resolved to
// stands in (no further registry request).
func (h *Handler) awaitVerdicts(ctx context.Context, items []judged) {
	if h.Evaluate == nil {
		return
	}
	var pending []int
	var wait time.Duration
	for i := range items {
		if w := WaitFor(items[i].decision, items[i].cov); w > 0 {
			pending, wait = append(pending, i), max(wait, w)
		}
	}
	if len(pending) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	log := ctrl.LoggerFrom(ctx)
	for _, i := range pending {
		it := &items[i]
		for _, c := range it.cov {
			if c.Source == nil || c.Digest == "" || c.Attestation != nil {
				continue // no digest to judge, or the controllers have it already
			}
			if _, err := h.Evaluate(ctx, c.Source, it.ref.Repository, it.ref.Tag, c.Digest); err != nil {
				log.V(1).Info("on-demand evaluation at admission", "image", it.ref.Image, "error", err.Error())
			}
		}
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for len(pending) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		still := pending[:0]
		for _, i := range pending {
			it := &items[i]
			known := map[string]string{} // Registry -> digest the tag resolved to
			for _, c := range it.cov {
				known[c.Registry.String()] = c.Digest
			}
			inv := *h.Inventory
			inv.Resolve = func(_ context.Context, reg *v1alpha1.Registry, _, _ string) (string, error) {
				return known[reg.Namespace+"/"+reg.Name], nil
			}
			cov, err := inv.Coverage(ctx, it.ref)
			if err != nil {
				still = append(still, i)
				continue
			}
			it.cov, it.decision = cov, Decide(it.ref, cov, h.Settings)
			if WaitFor(it.decision, it.cov) > 0 {
				still = append(still, i)
			}
		}
		pending = still
	}
}
