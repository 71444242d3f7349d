package verify

import (
	"context"
	"crypto"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// pushIndex pushes a two-platform OCI index and returns its digest and platforms.
func (r *testRegistry) pushIndex(t *testing.T, repo string) (name.Digest, []v1alpha1.PlatformManifest) {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var plats []v1alpha1.PlatformManifest
	for _, arch := range []string{"amd64", "arm64"} {
		img, _ := random.Image(64, 1)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
		d, _ := img.Digest()
		plats = append(plats, v1alpha1.PlatformManifest{Digest: d.String(), Platform: "linux/" + arch})
	}
	ref, _ := name.ParseReference(r.host+"/"+repo+":v1", name.Insecure)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	dg, _ := name.NewDigest(r.host+"/"+repo+"@"+d.String(), name.Insecure)
	return dg, plats
}

func TestIndexPolicy(t *testing.T) {
	reg := newRegistry(t)
	ctx := context.Background()
	key := newKey(t, "p256", crypto.SHA256)
	v := compile(t, keyPolicy("k"), Material{"k": key.pubPEM})
	type signed struct{ index, children bool }
	cases := []struct {
		signed signed
		policy v1alpha1.IndexPolicy
		want   bool
		level  string
	}{
		{signed{true, false}, v1alpha1.IndexPolicyIndex, true, LevelIndex},
		{signed{false, true}, v1alpha1.IndexPolicyIndex, false, LevelPlatforms}, // the wrong level signed: said so
		{signed{true, true}, v1alpha1.IndexPolicyIndex, true, LevelIndex + "+" + LevelPlatforms},
		{signed{true, true}, v1alpha1.IndexPolicyEither, true, LevelIndex + "+" + LevelPlatforms},
		{signed{true, false}, v1alpha1.IndexPolicyPlatforms, false, LevelIndex},
		{signed{false, true}, v1alpha1.IndexPolicyPlatforms, true, LevelPlatforms},
		{signed{true, true}, v1alpha1.IndexPolicyPlatforms, true, LevelIndex + "+" + LevelPlatforms},
		{signed{true, false}, v1alpha1.IndexPolicyEither, true, LevelIndex},
		{signed{false, true}, v1alpha1.IndexPolicyEither, true, LevelPlatforms},
		{signed{false, false}, v1alpha1.IndexPolicyEither, false, LevelNone},
	}
	for i, tc := range cases {
		t.Run(string(tc.policy)+"/"+tc.level, func(t *testing.T) {
			digest, plats := reg.pushIndex(t, "idx"+string(rune('a'+i)))
			if tc.signed.index {
				sign(t, digest, key.signer, "")
			}
			if tc.signed.children {
				for _, p := range plats {
					d, _ := name.NewDigest(digest.Context().String()+"@"+p.Digest, name.Insecure)
					sign(t, d, key.signer, "")
				}
			}
			res, err := v.VerifyImage(ctx, digest, true, tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			if res.Verified != tc.want || res.Level != tc.level {
				t.Fatalf("verified %v level %s, want %v %s (%+v)", res.Verified, res.Level, tc.want, tc.level, res)
			}
			if len(res.Platforms) != len(plats) {
				t.Fatalf("%d platform results, want %d under every index policy", len(res.Platforms), len(plats))
			}
			if !tc.signed.index && res.Authorities[0].Reason != ReasonSignatureMissing {
				t.Fatalf("the unsigned index must say SignatureMissing: %+v", res.Authorities)
			}
			for _, p := range res.Platforms {
				if !tc.signed.children && p.Result.Authorities[0].Reason != ReasonSignatureMissing {
					t.Fatalf("an unsigned platform must say SignatureMissing: %+v", p)
				}
			}
		})
	}

	t.Run("one platform unsigned", func(t *testing.T) {
		digest, plats := reg.pushIndex(t, "idx-partial")
		d, _ := name.NewDigest(digest.Context().String()+"@"+plats[0].Digest, name.Insecure)
		sign(t, d, key.signer, "")
		res, err := v.VerifyImage(ctx, digest, true, v1alpha1.IndexPolicyPlatforms)
		if err != nil || res.Verified || len(res.Platforms) != 2 || !res.Platforms[0].Result.Verified ||
			res.Platforms[1].Result.Authorities[0].Reason != ReasonSignatureMissing {
			t.Fatalf("want the unsigned platform named: %+v, %v", res, err)
		}
	})
}
