package controller

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
)

// TestHarborEnforcement walks a policy through Audit (the difference shown, nothing written), then
// Enforce (exactly the difference written, robot credentials in a Secret), a quiet pass (no write),
// drift repair (a robot deleted by hand, a deleted Secret), rotation, and removal from the spec
// (only what Portcullis created is removed).
func TestHarborEnforcement(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	// Made by hand before Portcullis: carol is a guest, a robot and an immutable rule exist.
	f.h.Mu.Lock()
	f.h.Projects["team-a"].Members = append(f.h.Projects["team-a"].Members, harbortest.Member{ID: 900, Kind: "u", Name: "carol", RoleID: 3})
	f.h.Projects["team-a"].ImmutableRules = append(f.h.Projects["team-a"].ImmutableRules, map[string]any{"id": int64(901), "disabled": false,
		"action": "immutable", "template": "immutable_template", "tag_selectors": []map[string]any{{"kind": "doublestar", "decoration": "matches", "pattern": "release-*"}},
		"scope_selectors": map[string]any{"repository": []map[string]any{{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}}}})
	f.h.Robots[902] = &harbortest.Robot{ID: 902, Name: "robot$team-a+legacy", Description: "made by hand", Project: "team-a", Secret: "hand-secret",
		Access: []map[string]string{{"resource": "repository", "action": "pull"}}}
	f.h.Mu.Unlock()

	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeAudit,
		Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{Exceptions: []v1alpha1.VulnerabilityException{
			{ID: "CVE-2021-38561", Reason: "not reachable"}}}},
		Access: &v1alpha1.AccessSpec{
			Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleDeveloper}, {Group: "devs", Role: v1alpha1.RoleMaintainer},
				{User: "carol", Role: v1alpha1.RoleDeveloper}},
			Robots: []v1alpha1.Robot{{Name: "ci", Permissions: []string{"repository:push", "repository:pull"}, SecretName: "ci-creds",
				RotateEvery: &metav1.Duration{Duration: time.Hour}}}},
		Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*"}},
		RegistrySettings: &v1alpha1.RegistrySettings{ScanOnPush: ptr(true), PreventVulnerablePulls: "HIGH", RequireCosignSignatures: ptr(true),
			CVEAllowlistFromExceptions: true},
	}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}

	// Audit: the whole difference is shown, nothing is written.
	waitFor(t, pol, "the Audit difference", enforced)
	st := pol.Status.Enforcement
	want := []string{"Update Setting auto_scan", "Update Setting enable_content_trust_cosign", "Update Setting prevent_vul", "Update Setting severity",
		"Update CVEAllowlist cve_allowlist", "Create Member group:devs", "Create Member user:alice", "Update Member user:carol",
		"Create ImmutableRule v* in **", "Create Robot ci"}
	if !st.DryRun || st.InSync || st.PendingChanges != int32(len(want)) || !slices.Equal(changeNames(st), want) || !strings.HasPrefix(st.Message, "mode Audit") {
		t.Fatalf("Audit status: %+v\nchanges %q\nwant    %q", st, changeNames(st), want)
	}
	if n := f.writes(); n != 0 {
		t.Fatalf("Audit made %d writes to Harbor", n)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "ci-creds"}, &corev1.Secret{}); err == nil {
		t.Fatal("Audit wrote the robot Secret")
	}

	// Enforce: exactly the difference is written.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Mode = v1alpha1.ModeEnforce })
	waitFor(t, pol, "Harbor in sync", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	st = pol.Status.Enforcement
	if st.DryRun || st.PendingChanges != 0 || len(st.Changes) != len(want) || pol.Status.LastEnforcedTime == nil {
		t.Fatalf("Enforce status: %+v", st)
	}
	if got := f.members(); got["u:alice"] != 2 || got["g:devs"] != 4 || got["u:carol"] != 2 || len(got) != 3 {
		t.Fatalf("members %v", got)
	}
	wantOwned := []v1alpha1.OwnedMember{{Project: "team-a", Kind: "g", Name: "devs"}, {Project: "team-a", Kind: "u", Name: "alice"}}
	if !slices.Equal(st.OwnedMembers, wantOwned) {
		t.Errorf("owned members %+v, want %+v (carol was there before)", st.OwnedMembers, wantOwned)
	}
	if got := f.rules(); !slices.Equal(got, []string{"release-*", "v*"}) || len(st.OwnedImmutableRules) != 1 || st.OwnedImmutableRules[0].Tags != "v*" {
		t.Fatalf("rules %v, owned %+v", got, st.OwnedImmutableRules)
	}
	f.h.Mu.Lock()
	md, al := f.h.Projects["team-a"].Metadata, f.h.Projects["team-a"].CVEAllowlist
	f.h.Mu.Unlock()
	for k, v := range map[string]string{"auto_scan": "true", "prevent_vul": "true", "severity": "high", "enable_content_trust_cosign": "true", "reuse_sys_cve_allowlist": "false"} {
		if md[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, md[k], v)
		}
	}
	if !slices.Equal(al, []string{"CVE-2021-38561"}) {
		t.Errorf("CVE allowlist %v", al)
	}
	rb := f.robot("robot$team-a+ci")
	if rb == nil || len(rb.Access) != 2 || !strings.HasPrefix(rb.Description, "portcullis:"+string(pol.UID)+" ") {
		t.Fatalf("robot %+v", rb)
	}
	user, pass, id := robotCreds(t, f.ns, "ci-creds")
	if user != rb.Name || pass != rb.Secret || id != strconv.FormatInt(rb.ID, 10) {
		t.Fatalf("Secret holds %s/%s for robot %s; want %s and the robot's secret, ID %d", user, pass, id, rb.Name, rb.ID)
	}
	waitFor(t, pol, "Ready", func(p *v1alpha1.RepositoryPolicy) bool {
		return hasCondition(p, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason)
	})
	waitForEvent(t, f.ns, "team-a", "EnforcementApplied")
	f.assertNoSecretLeak(t, pol)

	// A pass that finds nothing to change writes nothing, to Harbor or to the API server.
	writes, statusWrites := f.writes(), statusWritesOf(pol)
	f.kick(t, "ci-creds")
	if n := f.writes() - writes; n != 0 {
		t.Errorf("a pass with nothing to change made %d writes to Harbor", n)
	}
	if n := statusWritesOf(pol) - statusWrites; n != 0 {
		t.Errorf("a pass with nothing to change wrote the status %d times", n)
	}

	// Drift: the robot is deleted by hand; it is created again and the Secret gets the new secret.
	f.h.Mu.Lock()
	delete(f.h.Robots, rb.ID)
	f.h.Mu.Unlock()
	f.kick(t, "ci-creds")
	var rb2 *harbortest.Robot
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		rb2 = f.robot("robot$team-a+ci")
		_, pass, id := robotCreds(t, f.ns, "ci-creds")
		if rb2 != nil && pass == rb2.Secret && id == strconv.FormatInt(rb2.ID, 10) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("robot after drift repair: %+v; the Secret holds robot ID %s", rb2, id)
		}
		time.Sleep(pollInterval)
	}
	if rb2.ID == rb.ID {
		t.Fatalf("the robot was not created again: ID %d (was %d)", rb2.ID, rb.ID)
	}
	waitFor(t, pol, "the repair shown", func(p *v1alpha1.RepositoryPolicy) bool {
		return enforced(p) && p.Status.Enforcement.InSync && slices.ContainsFunc(p.Status.Enforcement.Changes, func(c v1alpha1.EnforcementChange) bool {
			return c.Kind == "Robot" && c.Action == "Create" && c.Done && strings.Contains(c.Detail, "missing in Harbor")
		})
	})

	// The Secret is deleted: a new secret is issued (Harbor shows one only once) and stored.
	if err := k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "ci-creds"}}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(eventuallyTimeout)
	for {
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "ci-creds"}, &corev1.Secret{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted robot Secret was not restored")
		}
		time.Sleep(pollInterval)
	}
	rb3 := f.robot("robot$team-a+ci")
	if _, pass, _ := robotCreds(t, f.ns, "ci-creds"); rb3.ID != rb2.ID || pass != rb3.Secret || pass == rb2.Secret {
		t.Fatalf("after the Secret was deleted: robot %d (was %d), Secret holds the current secret: %v, a new one: %v", rb3.ID, rb2.ID, pass == rb3.Secret, pass != rb2.Secret)
	}

	// Rotation: the secret was issued over an hour ago, so a new one is issued.
	s := &corev1.Secret{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "ci-creds"}, s); err != nil {
		t.Fatal(err)
	}
	patchObject(t, s, func(s *corev1.Secret) {
		s.Annotations[v1alpha1.RotatedAtAnnotation] = time.Now().Add(-61 * time.Minute).UTC().Format(time.RFC3339)
	})
	deadline = time.Now().Add(eventuallyTimeout)
	for {
		if _, pass, _ := robotCreds(t, f.ns, "ci-creds"); pass != rb3.Secret {
			if rb4 := f.robot("robot$team-a+ci"); rb4.ID != rb3.ID || pass != rb4.Secret {
				t.Fatalf("rotation: robot %d (was %d); the Secret holds its current secret: %v", rb4.ID, rb3.ID, pass == rb4.Secret)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the secret was not rotated")
		}
		time.Sleep(pollInterval)
	}
	f.assertNoSecretLeak(t, pol)

	// Removed from the spec: what Portcullis created goes; what was there before stays.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Access = &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "bob", Role: v1alpha1.RoleGuest}}}
		p.Spec.Immutability = nil
	})
	waitFor(t, pol, "the removals", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	if got := f.members(); len(got) != 2 || got["u:carol"] != 2 || got["u:bob"] != 3 {
		t.Errorf("members %v, want carol (made by hand) and bob", got)
	}
	if got := f.rules(); !slices.Equal(got, []string{"release-*"}) {
		t.Errorf("rules %v, want only the one made by hand", got)
	}
	if f.robot("robot$team-a+ci") != nil || f.robot("robot$team-a+legacy") == nil {
		t.Errorf("robots: ci must be deleted, legacy (made by hand) kept")
	}
	deadline = time.Now().Add(eventuallyTimeout)
	for k8sClient.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "ci-creds"}, &corev1.Secret{}) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the robot's Secret was not deleted with it")
		}
		time.Sleep(pollInterval)
	}
	if st := pol.Status.Enforcement; len(st.OwnedMembers) != 1 || st.OwnedMembers[0].Name != "bob" || len(st.OwnedImmutableRules) != 0 {
		t.Errorf("owned after removal: %+v %+v", st.OwnedMembers, st.OwnedImmutableRules)
	}

	// Deleted: the finalizer removes what Portcullis created (bob), keeps the rest, then lets go.
	if !slices.Contains(pol.Finalizers, harborFinalizer) {
		t.Fatalf("finalizers %v: an Enforce policy that writes to Harbor needs %s", pol.Finalizers, harborFinalizer)
	}
	if err := k8sClient.Delete(ctx, pol); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(eventuallyTimeout)
	for k8sClient.Get(ctx, client.ObjectKeyFromObject(pol), &v1alpha1.RepositoryPolicy{}) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the deleted policy is still there")
		}
		time.Sleep(pollInterval)
	}
	if got := f.members(); len(got) != 1 || got["u:carol"] != 2 {
		t.Errorf("members after the policy was deleted: %v, want only carol (made by hand)", got)
	}
	if f.robot("robot$team-a+legacy") == nil || !slices.Equal(f.rules(), []string{"release-*"}) {
		t.Errorf("what was made by hand must stay: legacy robot %v, rules %v", f.robot("robot$team-a+legacy"), f.rules())
	}
}
