package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestImmutableTagMoved: on a plain registry, pushing another image as an immutable tag (v*) is
// reported on the digest it moved to: spec.movedTags, TagImmutable=False naming both digests, a
// Warning event and the metric. A mutable tag (dev) that moves is recorded but reported as no
// violation, and an image no immutable tag moved to reads TagImmutable=True.
func TestImmutableTagMoved(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	first := dist.Push(t, "imm/app", "v1", registrytest.RandomImage(t))
	dist.Push(t, "imm/app", "dev", registrytest.RandomImage(t))
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns},
		Spec: v1alpha1.RegistrySpec{URL: dist.URL, Insecure: true}}
	if err := k8sClient.Create(ctx, reg); err != nil {
		t.Fatal(err)
	}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "immutable", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"imm/**"},
		Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*"}}}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	imageWith := func(digest string) *v1alpha1.ImageAttestation {
		t.Helper()
		var found *v1alpha1.ImageAttestation
		deadline := time.Now().Add(eventuallyTimeout)
		for found == nil {
			list := &v1alpha1.ImageAttestationList{}
			if err := k8sClient.List(ctx, list, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			for i := range list.Items {
				if list.Items[i].Spec.Digest == digest {
					found = &list.Items[i]
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ImageAttestation for %s", digest)
			}
			time.Sleep(pollInterval)
		}
		return found
	}
	waitFor(t, imageWith(first), "TagImmutable=True", func(i *v1alpha1.ImageAttestation) bool {
		return hasCondition(i, v1alpha1.TagImmutableCondition, metav1.ConditionTrue, v1alpha1.NoImmutableTagMovedReason)
	})
	before := metricValue(t, "portcullis_immutable_tag_moves_total", map[string]string{"policy": "immutable"})

	// Both tags move to one new image; a spec edit makes the Registry list again now.
	img := registrytest.RandomImage(t)
	second := dist.Push(t, "imm/app", "v1", img)
	dist.Push(t, "imm/app", "dev", img)
	patchObject(t, reg, func(r *v1alpha1.Registry) { r.Spec.Interval = &metav1.Duration{Duration: 31 * time.Second} })

	moved := waitFor(t, imageWith(second), "TagImmutable=False", func(i *v1alpha1.ImageAttestation) bool {
		return hasCondition(i, v1alpha1.TagImmutableCondition, metav1.ConditionFalse, v1alpha1.ImmutableTagMovedReason)
	})
	if len(moved.Spec.MovedTags) != 2 {
		t.Errorf("movedTags %+v, want v1 and dev from their earlier digests", moved.Spec.MovedTags)
	}
	msg := apimeta.FindStatusCondition(moved.Status.Conditions, v1alpha1.TagImmutableCondition).Message
	if !strings.Contains(msg, `tag "v1" moved here from `+first) || strings.Contains(msg, `"dev"`) {
		t.Errorf("TagImmutable message %q: want v1's move from %s, and nothing about dev", msg, first)
	}
	ev := waitForEvent(t, ns, moved.Name, v1alpha1.ImmutableTagMovedReason)
	if !strings.Contains(ev.Note, first) || !strings.Contains(ev.Note, second) {
		t.Errorf("event %q must name both digests", ev.Note)
	}
	if got := metricValue(t, "portcullis_immutable_tag_moves_total", map[string]string{"policy": "immutable"}) - before; got != 1 {
		t.Errorf("portcullis_immutable_tag_moves_total rose by %v, want 1 (v1; dev is mutable)", got)
	}

	// Acknowledging the moves (a deliberate re-push) clears the report; the record stays.
	patchObject(t, moved, func(i *v1alpha1.ImageAttestation) {
		i.Annotations = map[string]string{v1alpha1.MovesAcknowledgedAnnotation: time.Now().Add(time.Minute).UTC().Format(time.RFC3339)}
	})
	acked := waitFor(t, moved, "TagImmutable=True after the acknowledgement", func(i *v1alpha1.ImageAttestation) bool {
		return hasCondition(i, v1alpha1.TagImmutableCondition, metav1.ConditionTrue, v1alpha1.NoImmutableTagMovedReason)
	})
	if len(acked.Spec.MovedTags) != 2 {
		t.Errorf("the acknowledgement must keep the record: %+v", acked.Spec.MovedTags)
	}
}
