package registry

import (
	"fmt"
	"testing"
)

// TestManifestCacheBounds: the cache keeps the most recently used manifests within both bounds,
// counts bytes exactly through evictions, and refuses a manifest larger than the byte bound.
func TestManifestCacheBounds(t *testing.T) {
	m := newManifestCache()
	small := make([]byte, 1024)
	for i := range maxCachedManifests + 10 {
		m.Add(fmt.Sprintf("sha256:%d", i), cachedManifest{body: small})
	}
	if n := m.c.Len(); n != maxCachedManifests || m.bytes != maxCachedManifests*1024 {
		t.Fatalf("%d entries, %d bytes; want %d entries of 1 KiB", n, m.bytes, maxCachedManifests)
	}
	if _, ok := m.Get("sha256:0"); ok {
		t.Error("the oldest entry is still there beyond the entry bound")
	}
	if _, ok := m.Get(fmt.Sprintf("sha256:%d", maxCachedManifests+9)); !ok {
		t.Error("the newest entry is gone")
	}
	big := make([]byte, 4<<20) // MaxBody
	for i := range 20 {
		m.Add(fmt.Sprintf("sha256:big%d", i), cachedManifest{body: big})
	}
	if m.bytes > maxCachedManifestBytes {
		t.Fatalf("%d bytes kept, over the bound of %d", m.bytes, maxCachedManifestBytes)
	}
	if _, ok := m.Get("sha256:big19"); !ok {
		t.Error("the newest large manifest is gone")
	}
	m.Add("sha256:huge", cachedManifest{body: make([]byte, maxCachedManifestBytes+1)})
	if _, ok := m.Get("sha256:huge"); ok {
		t.Error("a manifest over the byte bound was kept")
	}
	before := m.bytes
	m.Add("sha256:big19", cachedManifest{body: big}) // again: no double count
	if m.bytes != before {
		t.Errorf("adding a kept digest again changed the byte count: %d -> %d", before, m.bytes)
	}
}
