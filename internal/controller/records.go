package controller

import (
	"context"
	"time"

	"k8s.io/utils/lru"
	ctrl "sigs.k8s.io/controller-runtime"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/store"
	"github.com/portcullis-dev/portcullis/internal/verify"
)

// scanRecords keeps the records of scans, keyed by digest and DB build time, so that a policy change
// re-evaluates verdicts without rescanning: the most recent in memory (maxScanRecords), all of them
// in the durable store when the manager has one (a restart, or more digests than memory holds,
// then rescan nothing).
type scanRecords struct {
	cache *lru.Cache
	store *store.Store
}

// storedScan is a scanRecord as the store keeps it.
type storedScan struct {
	Vulns   []policy.Finding    `json:"v,omitempty"`
	Secrets int                 `json:"s,omitempty"`
	Misconf []v1alpha1.Severity `json:"m,omitempty"`
}

func (s *scanRecords) get(key string) *scanRecord {
	if v, ok := s.cache.Get(key); ok {
		return v.(*scanRecord)
	}
	if s.store == nil {
		return nil
	}
	var st storedScan
	if ok, err := s.store.Get(store.Scans, key, &st); !ok || err != nil {
		return nil
	}
	rec := &scanRecord{vulns: st.Vulns, secrets: st.Secrets, misconf: st.Misconf}
	s.cache.Add(key, rec)
	return rec
}

// put keeps rec in memory and in the store. A store that fails to write is logged: the record stays
// in memory, and at worst the digest is scanned again after a restart.
func (s *scanRecords) put(ctx context.Context, key string, rec *scanRecord) {
	s.cache.Add(key, rec)
	if s.store == nil {
		return
	}
	if err := s.store.Put(store.Scans, key, storedScan{Vulns: rec.vulns, Secrets: rec.secrets, Misconf: rec.misconf}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "writing a scan record to the store")
	}
}

// storedVerification is a verification result as the store keeps it, with when it was made.
type storedVerification struct {
	Result verify.ImageResult `json:"r"`
	At     time.Time          `json:"at"`
}

// storedResult reads a verification result from the store (nil store: none).
func (v *verification) storedResult(key string) (verificationEntry, bool) {
	if v.store == nil {
		return verificationEntry{}, false
	}
	var st storedVerification
	if ok, err := v.store.Get(store.Verifications, key, &st); !ok || err != nil {
		return verificationEntry{}, false
	}
	return verificationEntry{result: st.Result, at: st.At}, true
}

// pruneEvery is how often records of digests that left every inventory are dropped from the store.
const pruneEvery = time.Hour

// pruneRecords drops, every pruneEvery, the stored records of digests that no ImageAttestation
// names any more, so the store's size follows the inventory.
func pruneRecords(ctx context.Context, images imageWalker, s *store.Store) error {
	log := ctrl.LoggerFrom(ctx).WithName("records")
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		keep := map[string]bool{}
		if err := images.each(ctx, "", "", func(ia *v1alpha1.ImageAttestation) { keep[ia.Spec.Digest] = true }); err != nil {
			log.Error(err, "listing ImageAttestations to prune the record store")
			continue
		}
		n, err := s.Prune(func(d string) bool { return keep[d] })
		if err != nil {
			log.Error(err, "pruning the record store")
			continue
		}
		if n > 0 {
			log.Info("pruned the record store", "records", n)
		}
	}
}
