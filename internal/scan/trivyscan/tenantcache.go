package trivyscan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/aquasecurity/trivy/pkg/cache"
	"github.com/aquasecurity/trivy/pkg/fanal/types"
)

// tenantCache scopes trivy's analysis cache to one tenant: every artifact and blob key is prefixed
// with a hash of the tenant, so an analysis is reused only by scans of the same tenant. Trivy keys a
// layer's analysis by the layer's digests, which a registry merely names: a hostile registry in one
// namespace could name another tenant's layer digests and be answered from that tenant's analysis
// without ever serving the bytes. Within a tenant, the same layer in many repositories and
// registries is still analysed once.
type tenantCache struct {
	inner  cache.Cache
	prefix string
}

// newTenantCache scopes c to tenant; an empty tenant returns c itself (one shared scope).
func newTenantCache(c cache.Cache, tenant string) cache.Cache {
	if tenant == "" {
		return c
	}
	sum := sha256.Sum256([]byte(tenant))
	return &tenantCache{inner: c, prefix: "tenant-" + hex.EncodeToString(sum[:8]) + "/"}
}

func (c *tenantCache) keys(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = c.prefix + id
	}
	return out
}

// MissingBlobs answers in the caller's (unprefixed) keys.
func (c *tenantCache) MissingBlobs(ctx context.Context, artifactID string, blobIDs []string) (bool, []string, error) {
	missingArtifact, missing, err := c.inner.MissingBlobs(ctx, c.prefix+artifactID, c.keys(blobIDs))
	for i := range missing {
		missing[i] = strings.TrimPrefix(missing[i], c.prefix)
	}
	return missingArtifact, missing, err
}

func (c *tenantCache) PutArtifact(ctx context.Context, artifactID string, info types.ArtifactInfo) error {
	return c.inner.PutArtifact(ctx, c.prefix+artifactID, info)
}

func (c *tenantCache) PutBlob(ctx context.Context, blobID string, info types.BlobInfo) error {
	return c.inner.PutBlob(ctx, c.prefix+blobID, info)
}

func (c *tenantCache) DeleteBlobs(ctx context.Context, blobIDs []string) error {
	return c.inner.DeleteBlobs(ctx, c.keys(blobIDs))
}

func (c *tenantCache) GetArtifact(ctx context.Context, artifactID string) (types.ArtifactInfo, error) {
	return c.inner.GetArtifact(ctx, c.prefix+artifactID)
}

func (c *tenantCache) GetBlob(ctx context.Context, blobID string) (types.BlobInfo, error) {
	return c.inner.GetBlob(ctx, c.prefix+blobID)
}

// Close and Clear belong to the shared cache's owner, not to one tenant's view.
func (c *tenantCache) Close() error                    { return nil }
func (c *tenantCache) Clear(ctx context.Context) error { return nil }
