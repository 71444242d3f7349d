package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// fakeLister serves a fixed registry and counts calls; errs fails calls by "kind repo[:tag]".
type fakeLister struct {
	repos     []string
	tags      map[string][]string          // repo -> tags
	manifests map[string]registry.Manifest // repo:tag -> manifest
	errs      map[string]error
	calls     map[string]int
	mu        sync.Mutex // listing calls come from several goroutines
}

func (f *fakeLister) call(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[strings.SplitN(key, " ", 2)[0]]++
	return f.errs[key]
}

func (f *fakeLister) Repositories(context.Context) ([]string, error) {
	return f.repos, f.call("catalog")
}

func (f *fakeLister) Tags(_ context.Context, repo string) ([]string, error) {
	if err := f.call("tags " + repo); err != nil {
		return nil, err
	}
	return f.tags[repo], nil
}

func (f *fakeLister) Resolve(_ context.Context, repo, tag string) (registry.Manifest, error) {
	if err := f.call("resolve " + repo + ":" + tag); err != nil {
		return registry.Manifest{}, err
	}
	return f.manifests[repo+":"+tag], nil
}

func (f *fakeLister) Platforms(_ context.Context, repo, digest string) ([]registry.Platform, error) {
	if err := f.call("platforms " + repo); err != nil {
		return nil, err
	}
	return []registry.Platform{{Digest: digest[:len(digest)-1] + "1", Platform: "linux/amd64"}}, nil
}

func digestN(n int) string { return fmt.Sprintf("sha256:%064d", n) }

func newFake() *fakeLister {
	oci := "application/vnd.oci.image.manifest.v1+json"
	return &fakeLister{
		repos: []string{"a", "b", "c", "scratch/x"},
		tags: map[string][]string{"a": {"v1", "latest", "v2-dev", "sha256-" + strings.Repeat("ab", 32) + ".sig",
			"sha256-" + strings.Repeat("ab", 32) + ".att", "sha256-" + strings.Repeat("ab", 32)}, "b": {"v1", "gone"}, "c": {"v1"}},
		manifests: map[string]registry.Manifest{
			"a:v1": {Digest: digestN(1), MediaType: oci}, "a:latest": {Digest: digestN(1), MediaType: oci},
			"a:v2-dev": {Digest: digestN(2), MediaType: oci}, "b:v1": {Digest: digestN(3), MediaType: oci},
			"c:v1": {Digest: digestN(4), MediaType: "application/vnd.oci.image.index.v1+json"},
		},
		errs: map[string]error{"resolve b:gone": fmt.Errorf("resolving: %w", registry.ErrNotFound)},
	}
}

func TestListInventory(t *testing.T) {
	spec := &v1alpha1.RegistrySpec{Repositories: v1alpha1.RegistryRepositories{PatternSelector: v1alpha1.PatternSelector{Exclude: []string{"scratch/**"}}}}
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{{Spec: v1alpha1.RepositoryPolicySpec{
		Repositories: []string{"**"}, Tags: v1alpha1.PatternSelector{Exclude: []string{"*-dev"}}}}})

	t.Run("lists selected tags and groups them by digest", func(t *testing.T) {
		f := newFake()
		inv, err := listInventory(context.Background(), f, spec, sel, nil)
		if err != nil || inv.repositories != 3 || len(inv.failed) != 0 || len(inv.images) != 3 {
			t.Fatalf("inventory %+v, err %v", inv, err)
		}
		if got := inv.images[imageKey{"a", digestN(1)}]; got == nil || strings.Join(got.tags, ",") != "latest,v1" {
			t.Errorf("a@1 = %+v", got)
		}
		if got := inv.images[imageKey{"c", digestN(4)}]; got == nil || len(got.platforms) != 1 {
			t.Errorf("index c@4 without platforms: %+v", got)
		}
		// a:v2-dev is not selected; signature, attestation and referrers-fallback tags are never images
		if f.calls["resolve"] != 5 || f.calls["platforms"] != 1 || f.calls["tags"] != 3 {
			t.Errorf("calls %v", f.calls)
		}
	})

	t.Run("a known index costs no GET", func(t *testing.T) {
		f := newFake()
		known := map[imageKey]*v1alpha1.ImageAttestation{{"c", digestN(4)}: {Spec: v1alpha1.ImageAttestationSpec{
			Platforms: []v1alpha1.PlatformManifest{{Digest: digestN(9)}}}}}
		inv, _ := listInventory(context.Background(), f, spec, sel, known)
		if f.calls["platforms"] != 0 || inv.images[imageKey{"c", digestN(4)}].platforms[0].Digest != digestN(9) {
			t.Errorf("calls %v", f.calls)
		}
	})

	t.Run("a failing repository is reported and the others listed", func(t *testing.T) {
		f := newFake()
		f.errs["tags b"] = fmt.Errorf("listing tags of b: %w", registry.ErrUnavailable)
		inv, err := listInventory(context.Background(), f, spec, sel, nil)
		if err != nil || !errors.Is(inv.failed["b"], registry.ErrUnavailable) || len(inv.failed) != 1 || len(inv.images) != 2 {
			t.Fatalf("inventory %+v, err %v", inv, err)
		}
	})

	t.Run("a repository that vanished is empty, not failed", func(t *testing.T) {
		f := newFake()
		f.errs["tags b"] = registry.ErrNotFound
		inv, _ := listInventory(context.Background(), f, spec, sel, nil)
		if len(inv.failed) != 0 || len(inv.images) != 2 {
			t.Fatalf("inventory %+v", inv)
		}
	})

	t.Run("a catalog failure fails the pass", func(t *testing.T) {
		f := newFake()
		f.errs["catalog"] = registry.ErrUnauthorized
		if _, err := listInventory(context.Background(), f, spec, sel, nil); !errors.Is(err, registry.ErrUnauthorized) {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("an expired deadline fails the rest without requests", func(t *testing.T) {
		f := newFake()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		f.errs["tags a"] = context.Canceled
		inv, _ := listInventory(ctx, f, spec, sel, nil)
		if len(inv.failed) != 3 || f.calls["tags"] != 0 {
			t.Fatalf("failed %v, calls %v", inv.failed, f.calls)
		}
	})

	t.Run("explicit names skip the catalog", func(t *testing.T) {
		f := newFake()
		named := &v1alpha1.RegistrySpec{Repositories: v1alpha1.RegistryRepositories{Names: []string{"a"}}}
		inv, _ := listInventory(context.Background(), f, named, sel, nil)
		if f.calls["catalog"] != 0 || inv.repositories != 1 || len(inv.images) != 1 {
			t.Fatalf("inventory %+v, calls %v", inv, f.calls)
		}
	})
}

func TestImageAttestationName(t *testing.T) {
	seen := map[string]bool{}
	for _, repo := range []string{"a", "team-a/API_server", "x/" + strings.Repeat("long", 30), "ns/__", "a.b/c.d"} {
		n := imageAttestationName("reg", repo, digestN(1))
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			t.Errorf("%q -> %q: %v", repo, n, errs)
		}
		if seen[n] {
			t.Errorf("duplicate name %q", n)
		}
		seen[n] = true
	}
	if imageAttestationName("reg", "a", digestN(1)) != imageAttestationName("reg", "a", digestN(1)) {
		t.Error("names must be deterministic")
	}
	if imageAttestationName("reg", "a", digestN(1)) == imageAttestationName("other", "a", digestN(1)) {
		t.Error("the Registry must be part of the name")
	}
}
