package controller

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestHarborDiscovery: a Harbor Registry's tags and digests come from Harbor's artifact API (the
// fake lists a tag, v9, that the distribution API behind it does not have), and a failing artifact
// API keeps the repository's ImageAttestations as they are.
func TestHarborDiscovery(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	digest := f.dist.Push(t, "team-a/tools/cli", "v1", registrytest.RandomImage(t))
	f.h.Mu.Lock()
	f.h.Projects["team-a"].Repositories["tools/cli"] = []harbortest.Artifact{{Digest: digest, Tags: []string{"v1", "v9"}, PushTime: time.Now()}}
	f.h.Mu.Unlock()
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "audit", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	var ia v1alpha1.ImageAttestation
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		list := &v1alpha1.ImageAttestationList{}
		if err := k8sClient.List(ctx, list, client.InNamespace(f.ns)); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) == 1 && slices.Equal(list.Items[0].Spec.Tags, []string{"v1", "v9"}) {
			ia = list.Items[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ImageAttestations %+v: want one for %s with tags v1 and v9 from the artifact API", list.Items, digest)
		}
		time.Sleep(pollInterval)
	}
	if ia.Spec.Digest != digest || ia.Spec.Repository != "team-a/tools/cli" {
		t.Fatalf("ImageAttestation %s %s", ia.Spec.Repository, ia.Spec.Digest)
	}
	if n := f.reads("/api/v2.0/projects/team-a/repositories/tools%2Fcli/artifacts"); n == 0 {
		t.Fatal("the artifact API was not used")
	}
	// The artifact API fails: the Registry reports it, the ImageAttestation stays.
	f.h.Mu.Lock()
	f.h.Faults["GET /api/v2.0/projects/team-a/repositories"] = http.StatusServiceUnavailable
	f.h.Mu.Unlock()
	patchObject(t, f.reg, func(r *v1alpha1.Registry) { r.Spec.Interval = &metav1.Duration{Duration: 31 * time.Second} })
	waitFor(t, f.reg, "the failure reported", func(r *v1alpha1.Registry) bool {
		c := findCondition(r, v1alpha1.ReadyCondition)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "unavailable")
	})
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&ia), &v1alpha1.ImageAttestation{}); err != nil {
		t.Fatalf("the ImageAttestation must stay while the artifact API fails: %v", err)
	}
	// The account may not list artifacts (403, a pull-only robot): tags come from the distribution
	// API again, which has v1 only.
	f.h.Mu.Lock()
	f.h.Faults["GET /api/v2.0/projects/team-a/repositories"] = http.StatusForbidden
	f.h.Mu.Unlock()
	deadline = time.Now().Add(eventuallyTimeout)
	for {
		got := &v1alpha1.ImageAttestation{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&ia), got); err == nil && slices.Equal(got.Spec.Tags, []string{"v1"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the artifact API refused, tags must come from the distribution API: %v", got.Spec.Tags)
		}
		time.Sleep(pollInterval)
	}
	waitFor(t, f.reg, "Ready again", func(r *v1alpha1.Registry) bool {
		return hasCondition(r, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason)
	})
}

// TestHarborLDAPGroup: an LDAP group is added by DN and listed by Harbor under its name; the next
// passes find it (role change, no second add) and remove it when it leaves the spec.
func TestHarborLDAPGroup(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	const dn = "cn=ops,ou=groups,dc=example,dc=com"
	f.h.Mu.Lock()
	f.h.LDAPGroups[dn] = "ops"
	f.h.Mu.Unlock()
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ldap", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{Group: dn, GroupType: v1alpha1.GroupLDAP, Role: v1alpha1.RoleDeveloper}}},
	}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pol, "the group added", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	if got := f.members(); len(got) != 1 || got["g:ops"] != 2 {
		t.Fatalf("members %v", got)
	}
	if owned := pol.Status.Enforcement.OwnedMembers; len(owned) != 1 || owned[0] != (v1alpha1.OwnedMember{Project: "team-a", Kind: "g", Name: "ops"}) {
		t.Fatalf("owned %+v", owned)
	}
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Access.Members[0].Role = v1alpha1.RoleGuest })
	waitFor(t, pol, "the role changed", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	if got := f.members(); len(got) != 1 || got["g:ops"] != 3 {
		t.Fatalf("members after the role change %v: the group must be found by DN, not added again", got)
	}
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Access.Members = []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleGuest}}
	})
	waitFor(t, pol, "the group removed", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	if got := f.members(); len(got) != 1 || got["u:alice"] != 3 {
		t.Fatalf("members after the group left the spec %v", got)
	}
}
