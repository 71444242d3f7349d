package verify

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"

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

// VerifyImage verifies digest and, when platforms are given (the image is an index), applies
// indexPolicy: Index needs the index digest verified, Platforms every platform manifest, Either one
// of the two (default).
func (v *Verifier) VerifyImage(ctx context.Context, digest name.Digest, platforms []v1alpha1.PlatformManifest, indexPolicy v1alpha1.IndexPolicy) (ImageResult, error) {
	top, err := v.Verify(ctx, digest)
	if err != nil {
		return ImageResult{}, err
	}
	out := ImageResult{Result: top, Level: LevelNone}
	if len(platforms) == 0 {
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
	all := true
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
