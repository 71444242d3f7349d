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

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestRetention runs retention against CNCF Distribution with deletion on. The repository holds
// v1..v5 (100, 80, 60, 5 and 1 days old), a cosign signature of v1, "ko" stamped with the epoch, and
// v2 used by a Pod; the rule keeps the 2 latest v* tags. The plan must delete v1, its signature and
// v3 and keep the rest with their reasons. Mode Audit with dryRun false, and Enforce with the default
// dryRun, delete nothing; Enforce with dryRun false deletes at most maxDeletionsPerPass (2), and the
// next pass (after a policy edit) deletes the one left, never a digest twice.
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

	host := strings.TrimPrefix(dist.URL, "http://")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "uses-v2", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: host + "/ret/app@" + d["v2"]}}}}
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
	gone := 0
	for _, tag := range []string{"v1", "v3", sigTag} {
		if _, err := c.Resolve(ctx, "ret/app", tag); errors.Is(err, registry.ErrNotFound) {
			gone++
		}
	}
	if gone != 2 {
		t.Fatalf("%d of v1, v3 and v1's signature deleted, want 2", gone)
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

func assertTags(t *testing.T, c *registry.Client, tags ...string) {
	t.Helper()
	for _, tag := range tags {
		if _, err := c.Resolve(context.Background(), "ret/app", tag); err != nil {
			t.Errorf("ret/app:%s must still be there: %v", tag, err)
		}
	}
}
