package policy

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func digestOf(s string) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(s)))
}

func sigTag(subject string) string {
	return strings.Replace(subject, ":", "-", 1) + ".sig"
}

func days(n int) time.Time { return now.Add(-time.Duration(n) * 24 * time.Hour) }

// TestPlanRetention covers each rule of the planner on a small repository.
func TestPlanRetention(t *testing.T) {
	a, b, c, d := digestOf("a"), digestOf("b"), digestOf("c"), digestOf("d")
	old, epoch, future, unknown := digestOf("old"), digestOf("epoch"), digestOf("future"), digestOf("unknown")
	sigA, sigOld, attSig := digestOf("sig-a"), digestOf("sig-old"), digestOf("att-sig")
	orphanSig, ref := digestOf("orphan"), digestOf("referrer-of-old")
	images := []RetentionImage{
		{Digest: a, Tags: []string{"v3", "latest"}, Created: days(1)},
		{Digest: b, Tags: []string{"v2"}, Created: days(10)},
		{Digest: c, Tags: []string{"v1"}, Created: days(40)},
		{Digest: d, Tags: []string{"dev-1"}, Created: days(50)}, // in use
		{Digest: old, Tags: []string{"v0"}, Created: days(400)},
		{Digest: epoch, Tags: []string{"ko"}, Created: time.Unix(0, 0)},
		{Digest: future, Tags: []string{"skew"}, Created: now.Add(48 * time.Hour)},
		{Digest: unknown, Tags: []string{"nodate"}},
		{Digest: sigA, Tags: []string{sigTag(a)}, Created: days(1)},
		{Digest: sigOld, Tags: []string{sigTag(old)}, Created: days(400)},
		{Digest: attSig, Subject: sigA, Created: days(1)}, // a referrer of a's signature
		{Digest: orphanSig, Tags: []string{sigTag(digestOf("gone"))}, Created: days(500)},
		{Digest: ref, Subject: old, Created: days(399)},
	}
	plan := PlanRetention(RetentionInput{
		Images: images, Now: now, InUse: map[string]bool{d: true},
		Rules: []v1alpha1.RetentionRule{
			{Tags: v1alpha1.PatternSelector{Include: []string{"v*"}}, KeepLatest: i32(2)},
			{KeepWithinDays: i32(45), Tags: v1alpha1.PatternSelector{Exclude: []string{"dev-*"}}},
		},
	})
	want := map[string]string{
		a: RetainedByRule, b: RetainedByRule, c: RetainedByRule, d: RetainedInUse,
		old: DeleteNoRuleRetains, epoch: RetainedTimeImplausible, future: RetainedTimeImplausible, unknown: RetainedTimeUnknown,
		sigA: RetainedSubjectKept, sigOld: DeleteSubjectDeleted, attSig: RetainedSubjectKept,
		orphanSig: RetainedSubjectUnknown, ref: DeleteSubjectDeleted,
	}
	got := map[string]string{}
	for _, it := range append(plan.Keep, plan.Delete...) {
		got[it.Digest] = it.Reason
		deleting := it.Reason == DeleteNoRuleRetains || it.Reason == DeleteSubjectDeleted
		if (it.Action == ActionDelete) != deleting {
			t.Errorf("%s: action %s with reason %s", it.Digest, it.Action, it.Reason)
		}
	}
	for dg, reason := range want {
		if got[dg] != reason {
			t.Errorf("%s (%v): reason %q, want %q", dg, tagsOf(images, dg), got[dg], reason)
		}
	}
	var order []string
	for _, it := range plan.Delete {
		order = append(order, it.Digest)
	}
	if want := []string{old, sigOld, ref}; !slices.Equal(order, want) {
		t.Errorf("deletion order %v, want the image, then its signature and referrer: %v", order, want)
	}
	if units := plan.Units(); len(units) != 1 || len(units[0]) != 3 {
		t.Errorf("units %v, want one unit of three", units)
	}
	if plan.String() != "keep 10, delete 3" {
		t.Errorf("summary %q", plan.String())
	}
}

func tagsOf(images []RetentionImage, dg string) []string {
	for _, i := range images {
		if i.Digest == dg {
			return i.Tags
		}
	}
	return nil
}

// TestPlanRetentionProperties runs the planner on random repositories (shared digests, signatures
// and referrers with one or several subjects, accessories that also carry ordinary tags, indexes and
// their platform manifests, in-use and protected digests, unknown and implausible times, a policy tag
// filter) under random rules, and checks what it must never do: delete a digest a rule keeps, one in
// use or protected, one whose age cannot be trusted, a platform manifest of a kept index, or an
// accessory a subject of which stays; deletions must list every image before its accessories, and
// every digest must be decided exactly once. It also checks that it does delete, so a planner that
// keeps everything fails.
func TestPlanRetentionProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	patterns := []string{"v*", "latest", "dev-*", "**", "release-?", "v1.*"}
	deletions := 0
	for iter := range 3000 {
		in := randomRetentionInput(r, patterns)
		plan := PlanRetention(in)
		ctx := fmt.Sprintf("case %d", iter)
		deletions += len(plan.Delete)

		decided := map[string]string{}
		for _, it := range append(plan.Keep, plan.Delete...) {
			if _, dup := decided[it.Digest]; dup {
				t.Fatalf("%s: %s decided twice", ctx, it.Digest)
			}
			decided[it.Digest] = it.Action
		}
		byDigest := map[string]RetentionImage{}
		for _, img := range in.Images {
			byDigest[img.Digest] = img
			if decided[img.Digest] == "" {
				t.Fatalf("%s: %s not decided", ctx, img.Digest)
			}
		}
		for _, img := range in.Images {
			if decided[img.Digest] == ActionKeep {
				for _, c := range img.Children {
					if decided[c] == ActionDelete {
						t.Fatalf("%s: deletes %s, a platform manifest of kept index %s", ctx, c, img.Digest)
					}
				}
			}
		}
		placed := map[string]bool{}
		for _, it := range plan.Delete {
			img := byDigest[it.Digest]
			if in.InUse[img.Digest] || in.Protected[img.Digest] != "" {
				t.Fatalf("%s: deletes %s, which a Pod uses or which is protected", ctx, img.Digest)
			}
			subjects, ordinary := accessoryParts(img)
			for _, s := range subjects {
				if decided[s] != ActionDelete {
					t.Fatalf("%s: deletes accessory %s whose subject %s stays (%q)", ctx, img.Digest, s, decided[s])
				}
				if !placed[s] {
					t.Fatalf("%s: deletes accessory %s before its subject %s", ctx, img.Digest, s)
				}
			}
			placed[img.Digest] = true
			if len(ordinary) == 0 && len(subjects) > 0 {
				continue
			}
			if img.Created.IsZero() || img.Created.Before(implausibleBefore) || img.Created.After(in.Now.Add(time.Hour)) {
				t.Fatalf("%s: deletes %s whose time %v cannot be trusted", ctx, img.Digest, img.Created)
			}
			if rule, ok := ruleKeeps(in, img); ok {
				t.Fatalf("%s: deletes %s (tags %v, created %v), which rule %+v keeps", ctx, img.Digest, img.Tags, img.Created, rule)
			}
		}
	}
	if deletions < 3000 {
		t.Fatalf("only %d deletions over 3000 random repositories: the planner hardly deletes", deletions)
	}
}

// accessoryParts is the test's own reading of a digest's subjects and ordinary tags.
func accessoryParts(img RetentionImage) (subjects, ordinary []string) {
	if img.Subject != "" {
		subjects = append(subjects, img.Subject)
	}
	for _, t := range img.Tags {
		if strings.HasSuffix(t, ".sig") || strings.HasSuffix(t, ".att") {
			subjects = append(subjects, strings.Replace(strings.TrimSuffix(strings.TrimSuffix(t, ".sig"), ".att"), "-", ":", 1))
		} else {
			ordinary = append(ordinary, t)
		}
	}
	return subjects, ordinary
}

// ruleKeeps is the rules' meaning, stated independently of the planner: a rule selects the digests
// with an ordinary tag that the rule and the policy's tag filter both select (or, untagged, a digest
// without tags), with a trusted time and not protected; it keeps one created within keepWithinDays,
// or one that fewer than keepLatest other selected digests are newer than.
func ruleKeeps(in RetentionInput, img RetentionImage) (v1alpha1.RetentionRule, bool) {
	selects := func(r v1alpha1.RetentionRule, i RetentionImage) bool {
		subjects, ordinary := accessoryParts(i)
		if len(ordinary) == 0 && len(subjects) > 0 || in.Protected[i.Digest] != "" ||
			i.Created.IsZero() || i.Created.Before(implausibleBefore) || i.Created.After(in.Now.Add(time.Hour)) {
			return false
		}
		if len(i.Tags) == 0 {
			return r.Untagged
		}
		for _, t := range ordinary {
			if Selects(in.TagFilter, t) && Selects(r.Tags, t) {
				return true
			}
		}
		return false
	}
	for _, r := range in.Rules {
		if !selects(r, img) {
			continue
		}
		if r.KeepWithinDays != nil && in.Now.Sub(img.Created) <= time.Duration(*r.KeepWithinDays)*24*time.Hour {
			return r, true
		}
		if r.KeepLatest != nil {
			newer := 0
			for _, o := range in.Images {
				if o.Digest != img.Digest && selects(r, o) && (o.Created.After(img.Created) || o.Created.Equal(img.Created) && o.Digest < img.Digest) {
					newer++
				}
			}
			if newer < int(*r.KeepLatest) {
				return r, true
			}
		}
	}
	return v1alpha1.RetentionRule{}, false
}

func randomRetentionInput(r *rand.Rand, patterns []string) RetentionInput {
	n := 1 + r.IntN(25)
	tagPool := []string{"v1", "v2", "v3", "v1.1", "v1.2", "latest", "dev-a", "dev-b", "release-1", "release-2", "main", "x"}
	r.Shuffle(len(tagPool), func(i, j int) { tagPool[i], tagPool[j] = tagPool[j], tagPool[i] })
	var images []RetentionImage
	for i := range n {
		img := RetentionImage{Digest: digestOf(fmt.Sprintf("img-%d-%d", i, r.Uint64()))}
		switch r.IntN(10) {
		case 0:
		case 1:
			img.Created = time.Unix(int64(r.IntN(1000)), 0)
		case 2:
			img.Created = now.Add(time.Duration(1+r.IntN(100)) * 24 * time.Hour)
		default:
			img.Created = now.Add(-time.Duration(r.IntN(120*24)) * time.Hour)
		}
		for range r.IntN(3) { // a tag points at one digest only
			if len(tagPool) > 0 {
				img.Tags, tagPool = append(img.Tags, tagPool[0]), tagPool[1:]
			}
		}
		images = append(images, img)
	}
	for i := range images { // some images are indexes of others
		if r.IntN(6) == 0 {
			for range 1 + r.IntN(2) {
				images[i].Children = append(images[i].Children, images[r.IntN(len(images))].Digest)
			}
		}
	}
	for range r.IntN(7) { // signatures and referrers, of present or absent subjects, sometimes chained
		subject := func() string {
			if r.IntN(4) == 0 {
				return digestOf(fmt.Sprintf("absent-%d", r.Uint64()))
			}
			return images[r.IntN(len(images))].Digest
		}
		acc := RetentionImage{Digest: digestOf(fmt.Sprintf("acc-%d", r.Uint64())), Created: now.Add(-time.Duration(r.IntN(2000)) * time.Hour)}
		switch r.IntN(4) {
		case 0:
			acc.Tags = []string{sigTag(subject())}
		case 1:
			acc.Subject = subject()
		case 2: // two subjects
			acc.Subject, acc.Tags = subject(), []string{sigTag(subject())}
		default: // a signature tag and an ordinary tag on one digest
			acc.Tags = []string{sigTag(subject())}
			if len(tagPool) > 0 {
				acc.Tags, tagPool = append(acc.Tags, tagPool[0]), tagPool[1:]
			}
		}
		images = append(images, acc)
	}
	in := RetentionInput{Images: images, Now: now, InUse: map[string]bool{}, Protected: map[string]string{}}
	if r.IntN(3) == 0 {
		in.TagFilter.Exclude = []string{patterns[r.IntN(len(patterns))]}
	}
	for _, img := range images {
		if r.IntN(8) == 0 {
			in.InUse[img.Digest] = true
		}
		if r.IntN(10) == 0 {
			in.Protected[img.Digest] = RetainedOutsidePolicy
		}
	}
	for range 1 + r.IntN(3) {
		rule := v1alpha1.RetentionRule{Untagged: r.IntN(3) == 0}
		if r.IntN(3) > 0 {
			rule.Tags.Include = []string{patterns[r.IntN(len(patterns))]}
		}
		if r.IntN(4) == 0 {
			rule.Tags.Exclude = []string{patterns[r.IntN(len(patterns))]}
		}
		if r.IntN(2) == 0 {
			rule.KeepLatest = i32(int32(1 + r.IntN(3)))
		}
		if rule.KeepLatest == nil || r.IntN(2) == 0 {
			rule.KeepWithinDays = i32(int32(r.IntN(60)))
		}
		in.Rules = append(in.Rules, rule)
	}
	return in
}
