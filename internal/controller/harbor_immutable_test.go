package controller

import (
	"context"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// TestHarborImmutableEveryTag: spec.immutability tags "**" reaches Harbor as one rule with the
// "excludes sha256-*" tag decoration, so every ordinary tag is frozen and no supply-chain tag is
// (Harbor's matcher, as the fake evaluates it); narrowing the policy to "v*" replaces exactly that
// rule, and the ledger records the decoration.
func TestHarborImmutableEveryTag(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "every-tag", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"**"}}}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pol, "Harbor in sync", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	st := pol.Status.Enforcement
	if got := changeNames(st); !slices.Equal(got, []string{"Create ImmutableRule all tags but sha256-* in **"}) {
		t.Fatalf("changes %q", got)
	}
	if o := st.OwnedImmutableRules; len(o) != 1 || o[0].Tags != "sha256-*" || o[0].TagDecoration != "excludes" || o[0].Repositories != "**" {
		t.Fatalf("owned %+v", o)
	}
	digest := strings.Repeat("ab", 32)
	f.h.Mu.Lock()
	proj := f.h.Projects["team-a"]
	frozen := map[string]bool{}
	for _, tag := range []string{"v1.0.0", "latest", "main", "sha256-" + digest, "sha256-" + digest + ".sig", "sha256-" + digest + ".att", "sha256-" + digest + ".sbom"} {
		frozen[tag] = proj.TagImmutable("shop/api", tag)
	}
	f.h.Mu.Unlock()
	for tag, want := range map[string]bool{"v1.0.0": true, "latest": true, "main": true} {
		if frozen[tag] != want {
			t.Errorf("tag %s immutable = %v, want %v", tag, frozen[tag], want)
		}
	}
	for tag, got := range frozen {
		if strings.HasPrefix(tag, "sha256-") && got {
			t.Errorf("supply-chain tag %s is immutable", tag)
		}
	}

	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Immutability.Tags = []string{"v*"} })
	waitFor(t, pol, "the narrower rule in sync", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	if got := f.rules(); !slices.Equal(got, []string{"v*"}) {
		t.Fatalf("rules after narrowing %v", got)
	}
	if o := pol.Status.Enforcement.OwnedImmutableRules; len(o) != 1 || o[0].Tags != "v*" || o[0].TagDecoration != "" {
		t.Fatalf("owned after narrowing %+v", o)
	}
	f.h.Mu.Lock()
	latest := f.h.Projects["team-a"].TagImmutable("shop/api", "latest")
	f.h.Mu.Unlock()
	if latest {
		t.Error("latest is still immutable after narrowing to v*")
	}
}
