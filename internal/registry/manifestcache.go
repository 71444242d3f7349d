package registry

import (
	"sync"

	"k8s.io/utils/lru"
)

// Bounds of a Client's manifest cache: entries and bytes, whichever is reached first. Manifests
// are a few KiB; the byte bound keeps a registry that serves large ones (up to MaxBody) from
// holding much memory, while the entry bound is high enough that a listing running far ahead of
// the scans (at 5,000 images, about 100 s) does not drop what the scans are about to read.
const (
	maxCachedManifests     = 8192
	maxCachedManifestBytes = 16 << 20
)

// manifestCache is an LRU of manifests by digest bounded by entries and bytes. Safe for concurrent
// use.
type manifestCache struct {
	mu    sync.Mutex
	bytes int
	c     *lru.Cache
}

func newManifestCache() *manifestCache {
	m := &manifestCache{}
	m.c = lru.NewWithEvictionFunc(maxCachedManifests, func(_ lru.Key, v any) {
		m.bytes -= len(v.(cachedManifest).body) // called under m.mu, from Add and RemoveOldest
	})
	return m
}

// Add keeps m under digest, dropping the least recently used manifests beyond the bounds; a
// manifest larger than the byte bound is not kept.
func (m *manifestCache) Add(digest string, cm cachedManifest) {
	if len(cm.body) > maxCachedManifestBytes {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.c.Get(digest); ok {
		return // content-addressed: the same bytes, now the most recently used
	}
	m.c.Add(digest, cm) // may evict the oldest (the eviction function counts its bytes off)
	m.bytes += len(cm.body)
	for m.bytes > maxCachedManifestBytes && m.c.Len() > 0 {
		m.c.RemoveOldest()
	}
}

// Get returns the manifest kept under digest.
func (m *manifestCache) Get(digest string) (any, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.c.Get(digest)
}
