package policy

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
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
		if (it.Action == ActionDelete) != strings.HasPrefix(it.Reason, "Delete") && it.Reason != DeleteNoRuleRetains && it.Reason != DeleteSubjectDeleted {
			t.Errorf("%s: action %s with reason %s", it.Digest, it.Action, it.Reason)
		}
	}
	for dg, reason := range want {
		if got[dg] != reason {
			t.Errorf("%s (%v): reason %q, want %q", dg, tagsOf(images, dg), got[dg], reason)
		}
	}
	if len(plan.Delete) != 3 || plan.Delete[0].Digest != sigOld && plan.Delete[0].Digest != old {
		t.Errorf("deletions %v, want old, its signature and its referrer, oldest first", plan.Delete)
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

// TestPlanRetentionProperties runs the planner on random repositories (shared digests, signatures,
// referrers, in-use digests, unknown and implausible times) under random rules, and checks what it
// must never do: delete a digest a rule keeps, one in use, one whose age cannot be trusted, or an
// accessory whose subject stays; and it must decide every digest exactly once.
func TestPlanRetentionProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	patterns := []string{"v*", "latest", "dev-*", "**", "release-?", "v1.*"}
	for iter := range 3000 {
		in := randomRetentionInput(r, patterns)
		plan := PlanRetention(in)
		ctx := fmt.Sprintf("case %d", iter)

		seen := map[string]int{}
		for _, it := range append(plan.Keep, plan.Delete...) {
			seen[it.Digest]++
		}
		for _, img := range in.Images {
			if seen[img.Digest] != 1 {
				t.Fatalf("%s: %s decided %d times", ctx, img.Digest, seen[img.Digest])
			}
		}
		deleted := map[string]bool{}
		for _, it := range plan.Delete {
			deleted[it.Digest] = true
		}
		byDigest := map[string]RetentionImage{}
		for _, img := range in.Images {
			byDigest[img.Digest] = img
		}
		for i, it := range plan.Delete {
			img := byDigest[it.Digest]
			if in.InUse[img.Digest] || in.Protected[img.Digest] != "" {
				t.Fatalf("%s: deletes %s, which a running Pod uses or which is protected", ctx, img.Digest)
			}
			if subject, acc := accessorySubject(img); acc {
				if !deleted[subject] {
					t.Fatalf("%s: deletes accessory %s whose subject %s stays", ctx, img.Digest, subject)
				}
				continue
			}
			if img.Created.IsZero() || img.Created.Before(implausibleBefore) || img.Created.After(in.Now.Add(time.Hour)) {
				t.Fatalf("%s: deletes %s whose time %v cannot be trusted", ctx, img.Digest, img.Created)
			}
			if rule, ok := ruleKeeps(in, img); ok {
				t.Fatalf("%s: deletes %s (tags %v, created %v), which rule %+v keeps", ctx, img.Digest, img.Tags, img.Created, rule)
			}
			if i > 0 {
				prev := byDigest[plan.Delete[i-1].Digest]
				if _, acc := accessorySubject(prev); !acc && prev.Created.After(img.Created) {
					t.Fatalf("%s: deletions not oldest first", ctx)
				}
			}
		}
	}
}

// accessorySubject is the test's own reading of what an accessory is.
func accessorySubject(img RetentionImage) (string, bool) {
	if img.Subject != "" {
		return img.Subject, true
	}
	for _, t := range img.Tags {
		if strings.HasSuffix(t, ".sig") || strings.HasSuffix(t, ".att") {
			return strings.Replace(strings.TrimSuffix(strings.TrimSuffix(t, ".sig"), ".att"), "-", ":", 1), true
		}
	}
	return "", false
}

// ruleKeeps is the rules' meaning, stated independently of the planner: a rule keeps an image one of
// whose tags it selects (or, untagged, an image without tags) if the image was created within
// keepWithinDays, or if fewer than keepLatest other selected images with a trusted time are newer.
func ruleKeeps(in RetentionInput, img RetentionImage) (v1alpha1.RetentionRule, bool) {
	selects := func(r v1alpha1.RetentionRule, i RetentionImage) bool {
		if _, acc := accessorySubject(i); acc || i.Created.IsZero() || i.Created.Before(implausibleBefore) || i.Created.After(in.Now.Add(time.Hour)) {
			return false
		}
		if len(i.Tags) == 0 {
			return r.Untagged
		}
		for _, t := range i.Tags {
			if Selects(r.Tags, t) {
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
	for range r.IntN(6) { // signatures and referrers, of present or absent subjects, sometimes chained
		subject := digestOf(fmt.Sprintf("absent-%d", r.Uint64()))
		if r.IntN(4) > 0 {
			subject = images[r.IntN(len(images))].Digest
		}
		acc := RetentionImage{Digest: digestOf(fmt.Sprintf("acc-%d", r.Uint64())), Created: now.Add(-time.Duration(r.IntN(2000)) * time.Hour)}
		if r.IntN(2) == 0 {
			acc.Tags = []string{sigTag(subject)}
		} else {
			acc.Subject = subject
		}
		images = append(images, acc)
	}
	in := RetentionInput{Images: images, Now: now, InUse: map[string]bool{}, Protected: map[string]string{}}
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
			rule.KeepLatest = i32(int32(r.IntN(4)))
		}
		if rule.KeepLatest == nil || r.IntN(2) == 0 {
			rule.KeepWithinDays = i32(int32(r.IntN(60)))
		}
		in.Rules = append(in.Rules, rule)
	}
	return in
}
