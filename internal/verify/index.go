package verify

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Levels at which a multi-platform image was found signed (ImageResult.Level).
const (
	LevelImage     = "Image"     // a single-platform image: its own digest
	LevelIndex     = "Index"     // the index digest verified
	LevelPlatforms = "Platforms" // every platform manifest verified
	LevelNone      = "None"      // neither
)

// PlatformResult is the outcome for one platform manifest of an index.
type PlatformResult struct {
	// Digest of the platform manifest and its Platform (os/arch[/variant]).
	Digest, Platform string
	// Result for that digest.
	Result Result
}

// ImageResult is the outcome for an image: its own digest's result and, for an index, each
// platform's, combined by the policy's indexPolicy.
type ImageResult struct {
	Result
	// Platforms holds the children's results when the index policy looked at them.
	Platforms []PlatformResult
	// Level says what was found signed, so a user can see why an index passes or fails.
	Level string
}

// VerifyImage verifies digest and, when isIndex (an OCI image index or Docker manifest list),
// applies indexPolicy: Index needs the index digest verified, Platforms every platform manifest,
// Either one of the two (default). The platform manifests are read from the index itself, fetched by
// digest, so none can be left out.
func (v *Verifier) VerifyImage(ctx context.Context, digest name.Digest, isIndex bool, indexPolicy v1alpha1.IndexPolicy) (ImageResult, error) {
	top, err := v.Verify(ctx, digest)
	if err != nil {
		return ImageResult{}, err
	}
	out := ImageResult{Result: top, Level: LevelNone}
	if !isIndex {
		if top.Verified {
			out.Level = LevelImage
		}
		return out, nil
	}
	if top.Verified {
		out.Level = LevelIndex
	}
	if indexPolicy == v1alpha1.IndexPolicyIndex || (indexPolicy != v1alpha1.IndexPolicyPlatforms && top.Verified) {
		return out, nil // the index decides; the platforms need not be fetched
	}
	platforms, err := v.platforms(ctx, digest)
	if err != nil {
		return ImageResult{}, err
	}
	all := len(platforms) > 0 // an empty index has nothing signed
	for _, p := range platforms {
		d, err := name.NewDigest(digest.Context().String()+"@"+p.Digest, nameOpts(digest)...)
		if err != nil {
			return ImageResult{}, fmt.Errorf("platform digest %s: %w", p.Digest, err)
		}
		r, err := v.Verify(ctx, d)
		if err != nil {
			return ImageResult{}, err
		}
		all = all && r.Verified
		out.Platforms = append(out.Platforms, PlatformResult{Digest: p.Digest, Platform: p.Platform, Result: r})
	}
	switch {
	case all && top.Verified:
		out.Level = LevelIndex + "+" + LevelPlatforms
	case all:
		out.Level = LevelPlatforms
	}
	if indexPolicy == v1alpha1.IndexPolicyPlatforms {
		out.Verified = all
	} else { // Either
		out.Verified = top.Verified || all
	}
	return out, nil
}

// platforms reads the index's platform manifests.
func (v *Verifier) platforms(ctx context.Context, digest name.Digest) ([]v1alpha1.PlatformManifest, error) {
	idx, err := remote.Index(digest, append([]remote.Option{remote.WithContext(ctx)}, v.remoteOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: reading index %s: %w", ErrRegistry, digest, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: reading index %s: %w", ErrRegistry, digest, err)
	}
	out := make([]v1alpha1.PlatformManifest, 0, len(im.Manifests))
	for _, m := range im.Manifests {
		p := ""
		if m.Platform != nil {
			p = m.Platform.OS + "/" + m.Platform.Architecture
			if m.Platform.Variant != "" {
				p += "/" + m.Platform.Variant
			}
		}
		out = append(out, v1alpha1.PlatformManifest{Digest: m.Digest.String(), Platform: p})
	}
	return out, nil
}
