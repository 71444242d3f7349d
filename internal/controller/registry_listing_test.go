package controller

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// pagedFake serves fakeLister's catalog in pages through RepositoryPages, as registry.Client does,
// and records where each listing started.
type pagedFake struct {
	*fakeLister
	pages  [][]string
	mu     sync.Mutex
	starts []string
	onPage func(i int) // called before page i is handed out
}

func (p *pagedFake) RepositoryPages(ctx context.Context, after string, fn func([]string) error) error {
	p.mu.Lock()
	p.starts = append(p.starts, after)
	p.mu.Unlock()
	for i, page := range p.pages {
		if after != "" && page[len(page)-1] <= after {
			continue
		}
		if p.onPage != nil {
			p.onPage(i)
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

func pagedRegistry() *pagedFake {
	f := newFake()
	f.repos = []string{"a", "b", "c", "d"}
	f.tags["d"] = []string{"v1"}
	f.manifests["d:v1"] = registry.Manifest{Digest: digestN(5), MediaType: "application/vnd.oci.image.manifest.v1+json"}
	return &pagedFake{fakeLister: f, pages: [][]string{{"a", "b"}, {"c", "d"}}}
}

// TestWalkIsProgressive: each repository is applied as soon as it is listed, before the catalog's
// next page is even asked for, and progress marks each finished page.
func TestWalkIsProgressive(t *testing.T) {
	p := pagedRegistry()
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{{Spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"**"}}}})
	var mu sync.Mutex
	var applied []string
	var beforePage2 []string
	p.onPage = func(i int) {
		if i == 1 {
			mu.Lock()
			beforePage2 = slices.Clone(applied)
			mu.Unlock()
		}
	}
	var marks []string // progress calls are serialised within a page, and pages come one by one
	w := newWalk(p, &v1alpha1.RegistrySpec{}, sel, nil, 4)
	res, err := w.run(context.Background(), "", func(l repoListing) {
		mu.Lock()
		defer mu.Unlock()
		if l.err != nil {
			t.Errorf("%s: %v", l.repo, l.err)
		}
		applied = append(applied, l.repo)
	}, func(last string, n int) { marks = append(marks, last) })
	if err != nil || !res.complete || res.repositories != 4 {
		t.Fatalf("run = %+v, %v", res, err)
	}
	slices.Sort(beforePage2)
	if strings.Join(beforePage2, ",") != "a,b" {
		t.Fatalf("applied before page 2 was listed: %v; want a,b", beforePage2)
	}
	if !slices.IsSorted(marks) || !slices.Contains(marks, "b") || marks[len(marks)-1] != "d" {
		t.Fatalf("progress marks %v: want them rising, through b, ending at d", marks)
	}
	if p.calls["catalog"] != 0 {
		t.Fatalf("a page lister must not be asked for the whole catalog: %v", p.calls)
	}
}

// TestWalkResumes: a listing resumed after "b" starts the catalog there, lists only c and d, and
// the repositories up to "b" are not taken as vanished.
func TestWalkResumes(t *testing.T) {
	p := pagedRegistry()
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{{Spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"**"}}}})
	w := newWalk(p, &v1alpha1.RegistrySpec{}, sel, nil, 2)
	var mu sync.Mutex
	var applied []string
	res, err := w.run(context.Background(), "b", func(l repoListing) {
		mu.Lock()
		applied = append(applied, l.repo)
		mu.Unlock()
	}, func(string, int) {})
	slices.Sort(applied)
	if err != nil || strings.Join(applied, ",") != "c,d" || strings.Join(p.starts, ",") != "b" || p.calls["tags"] != 2 {
		t.Fatalf("applied %v, starts %v, calls %v, err %v", applied, p.starts, p.calls, err)
	}
	l := &listing{after: "b", byRepo: map[string][]*v1alpha1.ImageAttestation{
		"a": {{}}, "c": {{}}, "gone-z": {{}}, "b-old": {{}},
	}}
	var vanished int
	for range l.vanished(res.governed) {
		vanished++
	}
	// "a" was covered by the earlier pass; "c" is listed; "gone-z" and "b-old" sort after "b" and
	// were not found: they vanished.
	if vanished != 2 {
		t.Fatalf("vanished %d ImageAttestations, want 2 (gone-z, b-old)", vanished)
	}
}

// TestWalkRecordsAccessories: the signature and attestation tags of a selected digest are resolved
// (one HEAD each) and recorded; those of digests not selected are not looked at.
func TestWalkRecordsAccessories(t *testing.T) {
	f := newFake()
	sig := "sha256-" + strings.Repeat("0", 63) + "1.sig"
	att := "sha256-" + strings.Repeat("0", 63) + "1.att"
	f.tags["a"] = append(f.tags["a"], sig, att)
	f.manifests["a:"+sig] = registry.Manifest{Digest: digestN(71)}
	f.manifests["a:"+att] = registry.Manifest{Digest: digestN(72)}
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{{Spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"**"}}}})
	inv, err := listInventory(context.Background(), f, &v1alpha1.RegistrySpec{}, sel, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := inv.images[imageKey{"a", digestN(1)}].accessories
	want := []v1alpha1.Accessory{{Tag: att, Digest: digestN(72)}, {Tag: sig, Digest: digestN(71)}}
	if !slices.Equal(got, want) {
		t.Fatalf("accessories %v, want %v", got, want)
	}
	if n := len(inv.images[imageKey{"a", digestN(2)}].accessories); n != 0 {
		t.Fatalf("a@2 has %d accessories, want none", n)
	}
	// 6 image tags (a:v2-dev is selected here) + 2 accessories; the sha256-abab... tags name no
	// listed digest and are not resolved.
	if f.calls["resolve"] != 8 {
		t.Fatalf("resolve calls %d, want 8", f.calls["resolve"])
	}
}

// TestWalkDeadline: a pass whose deadline passes mid-listing keeps going for nothing: the
// repositories left are failed without requests and the walk is not complete.
func TestWalkDeadline(t *testing.T) {
	p := pagedRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	p.onPage = func(i int) {
		if i == 1 {
			cancel()
		}
	}
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{{Spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"**"}}}})
	w := newWalk(p, &v1alpha1.RegistrySpec{}, sel, nil, 2)
	var mu sync.Mutex
	failed := map[string]bool{}
	var marks []string
	var mmu sync.Mutex
	res, err := w.run(ctx, "", func(l repoListing) {
		mu.Lock()
		defer mu.Unlock()
		failed[l.repo] = l.err != nil
	}, func(last string, _ int) { mmu.Lock(); marks = append(marks, last); mmu.Unlock() })
	if err == nil || res.complete {
		t.Fatalf("run = %+v, %v; want an incomplete walk", res, err)
	}
	if failed["a"] || failed["b"] || !failed["c"] || !failed["d"] || p.calls["tags"] != 2 {
		t.Fatalf("failed %v, calls %v", failed, p.calls)
	}
	if len(marks) == 0 || marks[len(marks)-1] != "b" {
		t.Fatalf("progress %v, want it to end at b", marks)
	}
}
