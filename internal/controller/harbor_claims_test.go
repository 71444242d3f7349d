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
)

// TestHarborMovedRegistry: a policy whose Registry moves to another Harbor starts a new record
// there, so a membership it created in the first Harbor is never taken for its own in the second.
func TestHarborMovedRegistry(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "moving", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleGuest}}},
	}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pol, "alice added", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	if st := pol.Status.Enforcement; len(st.OwnedMembers) != 1 || st.Registry != strings.TrimPrefix(f.h.URL, "http://") {
		t.Fatalf("record %+v", st)
	}
	// The second Harbor has alice already, added by hand.
	h2 := harbortest.Start(t)
	h2.AddProject("team-a", nil)
	h2.Mu.Lock()
	h2.Users["alice"], h2.Users["bob"] = true, true
	h2.Projects["team-a"].Members = []harbortest.Member{{ID: 77, Kind: "u", Name: "alice", RoleID: 3}}
	h2.Username, h2.Password = f.h.Username, f.h.Password
	f.h.Mu.Lock()
	h2.V2 = f.h.V2
	f.h.Mu.Unlock()
	h2.Mu.Unlock()
	patchObject(t, f.reg, func(r *v1alpha1.Registry) { r.Spec.URL = h2.URL })
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Access.Members = []v1alpha1.Member{{User: "bob", Role: v1alpha1.RoleGuest}}
	})
	waitFor(t, pol, "in sync with the second Harbor", func(p *v1alpha1.RepositoryPolicy) bool {
		return enforced(p) && p.Status.Enforcement.InSync && p.Status.Enforcement.Registry == strings.TrimPrefix(h2.URL, "http://")
	})
	h2.Mu.Lock()
	members := h2.Projects["team-a"].Members
	h2.Mu.Unlock()
	if len(members) != 2 || members[0].Name != "alice" {
		t.Fatalf("second Harbor's members %+v: alice (made by hand there) must stay, bob be added", members)
	}
	if st := pol.Status.Enforcement; len(st.OwnedMembers) != 1 || st.OwnedMembers[0].Name != "bob" {
		t.Fatalf("record in the second Harbor %+v", st.OwnedMembers)
	}
	if got := f.members(); got["u:alice"] != 3 {
		t.Errorf("the first Harbor is no longer written to: %v", got)
	}
}

// TestHarborClaims: a second Enforce policy naming an owned project is Stalled and writes nothing
// until the first lets it go; a policy asking for what Harbor cannot express is Stalled; a robot of
// the same name made by hand blocks that robot only; a Harbor failure is reported, retried, and
// recovers.
func TestHarborClaims(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	f.h.Mu.Lock()
	f.h.Robots[950] = &harbortest.Robot{ID: 950, Name: "robot$team-a+deploy", Description: "made by hand", Project: "team-a", Secret: "hand",
		Access: []map[string]string{{"resource": "repository", "action": "pull"}}}
	f.h.Mu.Unlock()
	first := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "first", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleGuest}},
			Robots: []v1alpha1.Robot{{Name: "deploy", Permissions: []string{"repository:pull"}, SecretName: "deploy-creds"}}},
	}}
	if err := k8sClient.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, first, "blocked robot", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.Failed })
	if msg := first.Status.Enforcement.Message; !strings.Contains(msg, `robot "robot$team-a+deploy" exists in project "team-a" and was not created by Portcullis`) {
		t.Fatalf("message %q", msg)
	}
	if got := f.members(); got["u:alice"] != 3 {
		t.Fatalf("the blocked robot must not stop the members: %v", got)
	}
	if rb := f.robot("robot$team-a+deploy"); rb == nil || rb.Description != "made by hand" || rb.Secret != "hand" {
		t.Fatalf("the robot made by hand was changed: %+v", rb)
	}
	waitFor(t, first, "EnforcementFailed", func(p *v1alpha1.RepositoryPolicy) bool {
		return hasCondition(p, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.EnforcementFailedReason)
	})
	patchObject(t, first, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Access.Robots = nil })
	waitFor(t, first, "Ready", func(p *v1alpha1.RepositoryPolicy) bool {
		return enforced(p) && hasCondition(p, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason)
	})

	second := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "second", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "bob", Role: v1alpha1.RoleDeveloper}}},
	}}
	if err := k8sClient.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, second, "a project conflict", func(p *v1alpha1.RepositoryPolicy) bool {
		return hasCondition(p, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.ProjectConflictReason)
	})
	if c := findCondition(second, v1alpha1.StalledCondition); !strings.Contains(c.Message, `"team-a" is already owned by RepositoryPolicy `+f.ns+"/first") {
		t.Errorf("conflict message %q", c.Message)
	}
	time.Sleep(time.Second)
	if _, ok := f.members()["u:bob"]; ok || second.Status.Enforcement != nil {
		t.Fatalf("the conflicting policy wrote to Harbor (%v) or status.enforcement (%+v)", f.members(), second.Status.Enforcement)
	}
	// The first lets go (it is deleted): the second takes the project over.
	if err := k8sClient.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, second, "the project taken over", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	if got := f.members(); got["u:bob"] != 2 {
		t.Fatalf("members %v", got)
	}

	// Harbor fails: the failure is shown and retried, and the write goes through once Harbor is back.
	f.h.Mu.Lock()
	f.h.Faults["POST /api/v2.0/projects/team-a/members"] = http.StatusServiceUnavailable
	f.h.Mu.Unlock()
	patchObject(t, second, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Access.Members = append(p.Spec.Access.Members, v1alpha1.Member{User: "carol", Role: v1alpha1.RoleGuest})
	})
	waitFor(t, second, "EnforcementFailed", func(p *v1alpha1.RepositoryPolicy) bool {
		return enforced(p) && p.Status.Enforcement.Failed && hasCondition(p, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.EnforcementFailedReason)
	})
	if st := second.Status.Enforcement; st.PendingChanges != 1 || !strings.Contains(st.Message, "harbor unavailable") {
		t.Errorf("status while Harbor fails: %+v", st)
	}
	f.h.Mu.Lock()
	delete(f.h.Faults, "POST /api/v2.0/projects/team-a/members")
	f.h.Mu.Unlock()
	// Backoff may have grown; a spec change brings the next pass now.
	patchObject(t, second, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Access.Members[0].Role = v1alpha1.RoleMaintainer })
	waitFor(t, second, "recovered", func(p *v1alpha1.RepositoryPolicy) bool {
		return enforced(p) && p.Status.Enforcement.InSync && hasCondition(p, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason)
	})
	if got := f.members(); got["u:carol"] != 3 || got["u:bob"] != 4 {
		t.Fatalf("members after recovery %v", got)
	}

	// Not expressible: members on part of a project.
	partial := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "partial", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-b/api"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleGuest}}},
	}}
	if err := k8sClient.Create(ctx, partial); err != nil {
		t.Fatal(err)
	}
	waitFor(t, partial, "NotExpressible", func(p *v1alpha1.RepositoryPolicy) bool {
		return hasCondition(p, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.NotExpressibleReason)
	})
}

// TestHarborDeleteInAudit: a policy switched to Audit and deleted goes at once, leaves Harbor as it
// is (Audit writes nothing) and says so with a Warning.
func TestHarborDeleteInAudit(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "leaving", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleGuest}}},
	}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pol, "alice added", func(p *v1alpha1.RepositoryPolicy) bool {
		return enforced(p) && p.Status.Enforcement.InSync && slices.Contains(p.Finalizers, harborFinalizer)
	})
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Mode = v1alpha1.ModeAudit })
	waitFor(t, pol, "the Audit pass", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.DryRun })
	if err := k8sClient.Delete(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, f.ns, "leaving", "HarborCleanupSkipped")
	deadline := time.Now().Add(eventuallyTimeout)
	for k8sClient.Get(ctx, client.ObjectKeyFromObject(pol), &v1alpha1.RepositoryPolicy{}) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the policy deleted in mode Audit is still there")
		}
		time.Sleep(pollInterval)
	}
	if got := f.members(); got["u:alice"] != 3 {
		t.Fatalf("members %v: a policy deleted in mode Audit writes nothing, alice stays", got)
	}
}
