package trivyscan

import (
	"context"
	"sync"

	"github.com/aquasecurity/trivy/pkg/cache"
	"github.com/aquasecurity/trivy/pkg/fanal/types"
)

// lockedCache serialises writes to trivy's on-disk cache against its reads. trivy v0.74.0's FSCache
// (bbolt) unmarshals a value after its read transaction has ended; bbolt only guarantees a value
// inside the transaction (https://github.com/etcd-io/bbolt#caveats--limitations), and a concurrent
// write that grows the file remaps it, so the read then faults (SIGSEGV, which no recover catches).
// Reads share the lock; a write waits until no read is decoding.
type lockedCache struct {
	mu    sync.RWMutex
	inner cache.Cache
}

func (c *lockedCache) MissingBlobs(ctx context.Context, artifactID string, blobIDs []string) (bool, []string, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.inner.MissingBlobs(ctx, artifactID, blobIDs)
}

func (c *lockedCache) PutArtifact(ctx context.Context, artifactID string, info types.ArtifactInfo) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.PutArtifact(ctx, artifactID, info)
}

func (c *lockedCache) PutBlob(ctx context.Context, blobID string, info types.BlobInfo) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.PutBlob(ctx, blobID, info)
}

func (c *lockedCache) DeleteBlobs(ctx context.Context, blobIDs []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.DeleteBlobs(ctx, blobIDs)
}

func (c *lockedCache) GetArtifact(ctx context.Context, artifactID string) (types.ArtifactInfo, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.inner.GetArtifact(ctx, artifactID)
}

func (c *lockedCache) GetBlob(ctx context.Context, blobID string) (types.BlobInfo, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.inner.GetBlob(ctx, blobID)
}

func (c *lockedCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.Close()
}

func (c *lockedCache) Clear(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.Clear(ctx)
}
