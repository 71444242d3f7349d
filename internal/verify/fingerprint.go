package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ReferrersFingerprint names what the OCI referrers API lists for digest and for each platform
// manifest of an index (platforms: their digests, `sha256:<hex>`): a hash of every referrer's digest
// and artifact type, in a stable order. It changes when a signature, attestation, bundle or SBOM is
// attached or removed, so a stored verification result stays valid while it does not: one referrers
// GET per digest instead of a verification. A digest the registry answers 404 for (no referrers API,
// no fallback tag) counts as having none. Errors are registry errors (ErrRegistry).
// Distribution spec: https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-referrers
func ReferrersFingerprint(ctx context.Context, digest name.Digest, platforms []string, remoteOpts ...remote.Option) (string, error) {
	h := sha256.New()
	ropts := append([]remote.Option{remote.WithContext(ctx)}, remoteOpts...)
	for _, d := range append([]string{digest.DigestStr()}, platforms...) {
		ref, err := name.NewDigest(digest.Context().String()+"@"+d, nameOpts(digest)...)
		if err != nil {
			return "", fmt.Errorf("digest %s: %w", d, err)
		}
		fmt.Fprintf(h, "%s\n", d)
		idx, err := remote.Referrers(ref, ropts...)
		if err != nil {
			var te *transport.Error
			if errors.As(err, &te) && te.StatusCode == 404 {
				continue
			}
			return "", fmt.Errorf("%w: listing referrers of %s: %w", ErrRegistry, ref, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return "", fmt.Errorf("%w: listing referrers of %s: %w", ErrRegistry, ref, err)
		}
		entries := make([]string, 0, len(im.Manifests))
		for _, m := range im.Manifests {
			entries = append(entries, m.Digest.String()+" "+m.ArtifactType)
		}
		slices.Sort(entries)
		for _, e := range entries {
			fmt.Fprintf(h, "  %s\n", e)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
