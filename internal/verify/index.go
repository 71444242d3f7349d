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
	// Platforms holds each platform manifest's result for an index (under indexPolicy Index they
	// only inform: the index digest alone decides).
	Platforms []PlatformResult
	// Level says what was found signed, so a user can see why an index passes or fails.
	Level string
}

// VerifyImage verifies digest and, when isIndex (an OCI image index or Docker manifest list),
// verifies every platform manifest too and applies indexPolicy: Index needs the index digest
// verified, Platforms every platform manifest, Either one of the two (default). Level and Platforms
// report what is signed whatever the policy. The platform manifests are read from the index itself,
// fetched by digest, so none can be left out.
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
	// The platforms are verified under every policy, also when the index alone decides: the result
	// then says which level is signed, so a user who signed the platforms under indexPolicy Index (or
	// the index under Platforms) sees that the wrong level was signed.
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
	switch indexPolicy {
	case v1alpha1.IndexPolicyIndex:
		out.Verified = top.Verified
	case v1alpha1.IndexPolicyPlatforms:
		out.Verified = all
	default: // Either
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
