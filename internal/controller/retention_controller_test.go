package controller

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestRetention runs retention against CNCF Distribution with deletion on. The repository holds
// v1..v5 (100, 80, 60, 5 and 1 days old), a cosign signature of v1, "ko" stamped with the epoch, and
// v2, which a Pod pulls by tag; the rule keeps the 2 latest v* tags. The plan must delete v1, its
// signature and v3 and keep the rest with their reasons. Mode Audit with dryRun false, and Enforce
// with the default dryRun, delete nothing; Enforce with dryRun false and maxDeletionsPerPass 2
// deletes the first unit, v1 then its signature, and not v3 (the next unit would exceed the budget);
// the next pass (after a policy edit) deletes v3, and no digest is deleted twice.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	c, err := registry.New(registry.Config{URL: dist.URL, Insecure: true, MetricsName: "test/retention"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	pushAged := func(tag string, created time.Time) string {
		img, err := mutate.CreatedAt(registrytest.RandomImage(t), v1.Time{Time: created})
		if err != nil {
			t.Fatal(err)
		}
		return dist.Push(t, "ret/app", tag, img)
	}
	d := map[string]string{}
	for tag, age := range map[string]int{"v1": 100, "v2": 80, "v3": 60, "v4": 5, "v5": 1} {
		d[tag] = pushAged(tag, now.Add(-time.Duration(age)*24*time.Hour))
	}
	d["ko"] = pushAged("ko", time.Unix(0, 0))
	sigTag := strings.Replace(d["v1"], ":", "-", 1) + ".sig"
	d["sig"] = dist.Push(t, "ret/app", sigTag, registrytest.RandomImage(t))

	// The Pod pulls v2 by tag through another name for the registry (as an in-cluster Service name
	// or a mirror would): tags are matched by repository path on any host.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "uses-v2", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com:5000/ret/app:v2"}}}}
	if err := k8sClient.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}

	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns},
		Spec: v1alpha1.RegistrySpec{URL: dist.URL, Insecure: true}}
	if err := k8sClient.Create(ctx, reg); err != nil {
		t.Fatal(err)
	}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "retain", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"ret/**"}, Mode: v1alpha1.ModeAudit,
		Retention: &v1alpha1.RetentionSpec{DryRun: ptrTo(false), Rules: []v1alpha1.RetentionRule{
			{Tags: v1alpha1.PatternSelector{Include: []string{"v*"}}, KeepLatest: ptrTo(int32(2))}}},
	}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	planned := func(p *v1alpha1.RepositoryPolicy) bool {
		return p.Status.Retention != nil && p.Status.Retention.ObservedGeneration == p.Generation && p.Status.Retention.Repositories == 1
	}
	waitFor(t, pol, "a retention plan", planned)
	st := pol.Status.Retention
	if !st.DryRun || st.ToDelete != 3 || st.Deleted != 0 || st.Kept != 4 || !strings.Contains(st.Message, "mode Audit") {
		t.Fatalf("Audit plan: %+v", st)
	}
	want := map[string]string{d["v1"]: "NoRuleRetains", d["v3"]: "NoRuleRetains", d["sig"]: "SubjectDeleted", d["ko"]: "TimeImplausible"}
	for _, it := range st.Items {
		if it.Reason != want[it.Digest] {
			t.Errorf("item %s %v: %s %s, want reason %q", it.Digest, it.Tags, it.Action, it.Reason, want[it.Digest])
		}
		delete(want, it.Digest)
	}
	if len(want) > 0 {
		t.Errorf("plan items lack %v", want)
	}
	waitForEvent(t, ns, "retain", "RetentionPlanned")
	assertTags(t, c, "v1", "v2", "v3", "v4", "v5", "ko", sigTag)

	// Enforce, dryRun default (true): still nothing deleted.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Mode, p.Spec.Retention.DryRun = v1alpha1.ModeEnforce, nil
	})
	waitFor(t, pol, "the dry-run plan", planned)
	if st := pol.Status.Retention; !st.DryRun || st.ToDelete != 3 || st.Deleted != 0 || !strings.HasPrefix(st.Message, "dry run") {
		t.Fatalf("dry-run plan: %+v", st)
	}
	assertTags(t, c, "v1", "v3", sigTag)

	// Enforce for real, two deletions per pass: the oldest two go.
	before := metricValue(t, "portcullis_retention_deletions_total", map[string]string{"policy": "retain"})
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Retention.DryRun, p.Spec.Retention.MaxDeletionsPerPass = ptrTo(false), ptrTo(int32(2))
	})
	waitFor(t, pol, "the first deleting pass", planned)
	if st := pol.Status.Retention; st.DryRun || st.ToDelete != 3 || st.Deleted != 2 {
		t.Fatalf("first pass: %+v", st)
	}
	waitForEvent(t, ns, "retain", "RetentionDeleted")
	for _, tag := range []string{"v1", sigTag} {
		if _, err := c.Resolve(ctx, "ret/app", tag); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s must be deleted in the first unit: %v", tag, err)
		}
	}
	assertTags(t, c, "v3")
	if items := pol.Status.Retention.Items; len(items) < 2 || items[0].Digest != d["v1"] || items[1].Digest != d["sig"] || items[0].Action != "Deleted" {
		t.Errorf("items %+v: want v1 then its signature deleted, first", items)
	}

	// The next pass plans afresh and deletes the one left.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.MaxDeletionsPerPass = ptrTo(int32(5)) })
	waitFor(t, pol, "the second deleting pass", planned)
	if st := pol.Status.Retention; st.ToDelete != 1 || st.Deleted != 1 {
		t.Fatalf("second pass: %+v", st)
	}
	for _, tag := range []string{"v1", "v3", sigTag} {
		if _, err := c.Resolve(ctx, "ret/app", tag); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s still resolves: %v", tag, err)
		}
	}
	assertTags(t, c, "v2", "v4", "v5", "ko")
	if got := metricValue(t, "portcullis_retention_deletions_total", map[string]string{"policy": "retain"}) - before; got != 3 {
		t.Errorf("portcullis_retention_deletions_total rose by %v, want 3 (no digest deleted twice)", got)
	}
}

// retentionFixture starts a Distribution with ret/app holding one image per tag, built the given
// number of days ago, and a Registry "dist" for it in a new namespace.
func retentionFixture(t *testing.T, opts registrytest.Options, ages map[string]int) (string, *registry.Client) {
	t.Helper()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, opts)
	c, err := registry.New(registry.Config{URL: dist.URL, Insecure: true, MetricsName: "test/" + t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	for tag, age := range ages {
		img, err := mutate.CreatedAt(registrytest.RandomImage(t), v1.Time{Time: time.Now().Add(-time.Duration(age) * 24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		dist.Push(t, "ret/app", tag, img)
	}
	if err := k8sClient.Create(context.Background(), &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns},
		Spec: v1alpha1.RegistrySpec{URL: dist.URL, Insecure: true}}); err != nil {
		t.Fatal(err)
	}
	return ns, c
}

func assertTags(t *testing.T, c *registry.Client, tags ...string) {
	t.Helper()
	for _, tag := range tags {
		if _, err := c.Resolve(context.Background(), "ret/app", tag); err != nil {
			t.Errorf("ret/app:%s must still be there: %v", tag, err)
		}
	}
}

// TestRetentionKeepsWhatAnotherPolicyKeeps: rules are a union of what is kept across policies too.
// Policy "short" (Enforce, keep the latest 1) would delete v1, but policy "long" (Audit, keep 365
// days) governs the same repository and keeps it, so v1 survives two deleting passes.
func TestRetentionKeepsWhatAnotherPolicyKeeps(t *testing.T) {
	ctx := context.Background()
	ns, c := retentionFixture(t, registrytest.Options{}, map[string]int{"v1": 100, "v2": 1})
	long := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "long", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"},
		Retention: &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepWithinDays: ptrTo(int32(365))}}}}}
	short := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "short", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"ret/**"}, Mode: v1alpha1.ModeEnforce,
		Retention: &v1alpha1.RetentionSpec{DryRun: ptrTo(false), Rules: []v1alpha1.RetentionRule{{KeepLatest: ptrTo(int32(1))}}}}}
	for _, p := range []*v1alpha1.RepositoryPolicy{long, short} {
		if err := k8sClient.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	planned := func(p *v1alpha1.RepositoryPolicy) bool {
		return p.Status.Retention != nil && p.Status.Retention.ObservedGeneration == p.Generation && p.Status.Retention.Repositories == 1
	}
	waitFor(t, short, "a first plan", planned)
	patchObject(t, short, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.MaxDeletionsPerPass = ptrTo(int32(3)) })
	waitFor(t, short, "a second plan", planned)
	if st := short.Status.Retention; st.ToDelete != 0 || st.Deleted != 0 || st.Kept != 2 {
		t.Fatalf("short's plan %+v: want v1 kept because long keeps it", st)
	}
	if _, err := c.Resolve(ctx, "ret/app", "v1"); err != nil {
		t.Fatalf("v1 must survive: %v", err)
	}
}

// TestRetentionDeletionDisabled: a registry with manifest deletion off answers 405; the pass stops
// with a message that says how to fix it and a RetentionFailed event, and the image stays.
func TestRetentionDeletionDisabled(t *testing.T) {
	ctx := context.Background()
	ns, c := retentionFixture(t, registrytest.Options{NoDelete: true}, map[string]int{"v1": 100, "v2": 1})
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "locked", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"ret/**"}, Mode: v1alpha1.ModeEnforce,
		Retention: &v1alpha1.RetentionSpec{DryRun: ptrTo(false), Rules: []v1alpha1.RetentionRule{{KeepLatest: ptrTo(int32(1))}}}}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	planned := func(p *v1alpha1.RepositoryPolicy) bool {
		return p.Status.Retention != nil && p.Status.Retention.ObservedGeneration == p.Generation && p.Status.Retention.Repositories == 1
	}
	waitFor(t, pol, "a first plan", planned)
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.MaxDeletionsPerPass = ptrTo(int32(3)) })
	waitFor(t, pol, "a deleting pass", planned)
	if st := pol.Status.Retention; st.Deleted != 0 || st.ToDelete != 1 || !strings.Contains(st.Message, "405") {
		t.Fatalf("status %+v: want the deletion refused with 405 in the message", st)
	}
	waitForEvent(t, ns, "locked", "RetentionFailed")
	if _, err := c.Resolve(ctx, "ret/app", "v1"); err != nil {
		t.Fatalf("v1 must still be there: %v", err)
	}
}

// TestRetentionPlansFromInventory (repository inv/app: TestRetention's Pod uses ret/app:v2, and
// Pods are matched by repository path on any host): a plan that deletes nothing (Audit, dry run) comes from the
// inventory the Registry's listing keeps; planning again after a policy change lists no tag and
// requests no manifest from the registry (before, every pass listed and HEADed each tag again).
func TestRetentionPlansFromInventory(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	want := map[string]string{}
	for tag, age := range map[string]int{"v1": 90, "v2": 60, "v3": 30, "v4": 1} {
		img, err := mutate.CreatedAt(registrytest.RandomImage(t), v1.Time{Time: time.Now().Add(-time.Duration(age) * 24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		want["inv/app@"+dist.Push(t, "inv/app", tag, img)] = tag
	}
	px := newProxy(t, dist.URL)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns},
		Spec: v1alpha1.RegistrySpec{URL: px.URL, Insecure: true, Interval: &metav1.Duration{Duration: 24 * time.Hour}}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "plan", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"inv/**"}, Mode: v1alpha1.ModeAudit,
		Retention: &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepLatest: ptrTo(int32(3))}}}}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitImages(t, ns, want)
	planned := func(p *v1alpha1.RepositoryPolicy) bool {
		return p.Status.Retention != nil && p.Status.Retention.ObservedGeneration == p.Generation && p.Status.Retention.Repositories == 1
	}
	waitFor(t, pol, "a first plan", func(p *v1alpha1.RepositoryPolicy) bool {
		return planned(p) && p.Status.Retention.Kept+p.Status.Retention.ToDelete == 4
	})
	if st := pol.Status.Retention; st.ToDelete != 1 || st.Items[0].Tags[0] != "v1" {
		t.Fatalf("first plan %+v: want v1 planned for deletion", st)
	}
	// Keeping all four: planned from the inventory alone.
	before := px.snapshot()
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.Rules[0].KeepLatest = ptrTo(int32(4)) })
	waitFor(t, pol, "a second plan", planned)
	if st := pol.Status.Retention; st.ToDelete != 0 || st.Kept != 4 {
		t.Fatalf("second plan %+v: want all four kept", st)
	}
	after := px.snapshot()
	// A listing is a tag list and a HEAD per tag (blob and manifest GETs may be the scanner's, which
	// runs meanwhile).
	for _, k := range []string{"GET tags", "HEAD manifest"} {
		if n := after[k] - before[k]; n != 0 {
			t.Errorf("planning again cost %d %s requests, want none (requests %v -> %v)", n, k, before, after)
		}
	}
	// A plan that deletes, dry run included, is made again from a listing of the repository (the
	// inventory holds only the tags some policy selects).
	before = px.snapshot()
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.Rules[0].KeepLatest = ptrTo(int32(2)) })
	waitFor(t, pol, "a third plan", planned)
	if st := pol.Status.Retention; st.ToDelete != 2 || st.Kept != 2 {
		t.Fatalf("third plan %+v: want v1 and v2 planned for deletion", st)
	}
	if n := px.snapshot()["GET tags"] - before["GET tags"]; n != 1 {
		t.Errorf("a deleting plan listed the repository %d times, want 1", n)
	}
}
