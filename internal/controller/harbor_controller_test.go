package controller

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// harborFixture is a fake Harbor (held to its swagger) in front of a real Distribution, with
// project team-a, and a Registry of provider Harbor for it in a new namespace.
type harborFixture struct {
	ns  string
	h   *harbortest.Server
	reg *v1alpha1.Registry
}

func newHarborFixture(t *testing.T) *harborFixture {
	t.Helper()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	h := harbortest.Start(t)
	u, _ := url.Parse(dist.URL)
	h.Mu.Lock()
	h.V2 = httputil.NewSingleHostReverseProxy(u)
	h.Users["alice"], h.Users["bob"], h.Users["carol"], h.Groups["devs"] = true, true, true, true
	h.Mu.Unlock()
	h.AddProject("team-a", map[string]string{"auto_scan": "false"})
	if err := k8sClient.Create(context.Background(), basicAuthSecret(ns, "harbor-admin", h.Username, h.Password)); err != nil {
		t.Fatal(err)
	}
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "harbor", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
		URL: h.URL, Insecure: true, Provider: v1alpha1.ProviderHarbor, SecretRef: &v1alpha1.LocalObjectReference{Name: "harbor-admin"}}}
	if err := k8sClient.Create(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	return &harborFixture{ns: ns, h: h, reg: reg}
}

// writes counts the requests that change Harbor.
func (f *harborFixture) writes() int {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	n := 0
	for k, v := range f.h.Requests {
		if !strings.HasPrefix(k, "GET ") {
			n += v
		}
	}
	return n
}

func (f *harborFixture) reads(path string) int {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	return f.h.Requests["GET "+path]
}

func (f *harborFixture) members() map[string]int64 {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	out := map[string]int64{}
	for _, m := range f.h.Projects["team-a"].Members {
		out[m.Kind+":"+m.Name] = m.RoleID
	}
	return out
}

func (f *harborFixture) robot(name string) *harbortest.Robot {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	for _, r := range f.h.Robots {
		if r.Name == name {
			c := *r
			return &c
		}
	}
	return nil
}

func (f *harborFixture) rules() []string {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	var out []string
	for _, r := range f.h.Projects["team-a"].ImmutableRules {
		raw, _ := json.Marshal(r)
		var rule struct {
			TagSelectors []struct{ Pattern string } `json:"tag_selectors"`
		}
		_ = json.Unmarshal(raw, &rule)
		out = append(out, rule.TagSelectors[0].Pattern)
	}
	slices.Sort(out)
	return out
}

// enforced waits until the policy's current generation has been compared with Harbor.
func enforced(p *v1alpha1.RepositoryPolicy) bool {
	e := p.Status.Enforcement
	return e != nil && e.ObservedGeneration == p.Generation
}

// kick touches the robot Secret so the Harbor controller runs a pass now, and waits for it (a new
// read of the project).
func (f *harborFixture) kick(t *testing.T, secretName string) {
	t.Helper()
	before := f.reads("/api/v2.0/projects/team-a")
	s := &corev1.Secret{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: secretName}, s); err != nil {
		t.Fatal(err)
	}
	patchObject(t, s, func(s *corev1.Secret) { s.Labels["kick"] = strconv.FormatInt(time.Now().UnixNano(), 10) })
	deadline := time.Now().Add(eventuallyTimeout)
	for f.reads("/api/v2.0/projects/team-a") == before {
		if time.Now().After(deadline) {
			t.Fatal("no Harbor pass after touching the robot Secret")
		}
		time.Sleep(pollInterval)
	}
	time.Sleep(500 * time.Millisecond) // let the pass finish its writes
}

func robotCreds(t *testing.T, ns, name string) (user, pass, id string) {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	if s.Type != corev1.SecretTypeDockerConfigJson {
		t.Fatalf("Secret %s has type %s", name, s.Type)
	}
	var cfg struct {
		Auths map[string]struct{ Username, Password, Auth string }
	}
	if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil || len(cfg.Auths) != 1 {
		t.Fatalf("Secret %s: %s (%v)", name, s.Data[corev1.DockerConfigJsonKey], err)
	}
	for _, a := range cfg.Auths {
		return a.Username, a.Password, s.Annotations[v1alpha1.RobotIDAnnotation]
	}
	return
}

// assertNoSecretLeak checks that no robot secret the fake issued appears in the policy (status
// included) or in any event of the namespace.
func (f *harborFixture) assertNoSecretLeak(t *testing.T, pol *v1alpha1.RepositoryPolicy) {
	t.Helper()
	raw, _ := json.Marshal(pol)
	list := &eventsv1.EventList{}
	if err := k8sClient.List(context.Background(), list, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		raw = append(raw, e.Note...)
	}
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	for _, r := range f.h.Robots {
		if strings.Contains(string(raw), r.Secret) {
			t.Errorf("the secret of robot %s appears in the policy or an event", r.Name)
		}
	}
}

func changeNames(st *v1alpha1.EnforcementStatus) []string {
	var out []string
	for _, c := range st.Changes {
		out = append(out, c.Action+" "+c.Kind+" "+c.Name)
	}
	return out
}

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
	if rb == nil || len(rb.Access) != 2 || !strings.HasPrefix(rb.Description, "portcullis:"+f.ns+"/team-a ") {
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
	if rb2.ID == rb.ID || !slices.Contains(changeNames(pol.Status.Enforcement), "Create Robot ci") {
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
	if c := findCondition(second, v1alpha1.StalledCondition); !strings.Contains(c.Message, `"team-a" is already owned by RepositoryPolicy "first"`) {
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
	waitFor(t, second, "recovered", func(p *v1alpha1.RepositoryPolicy) bool {
		return enforced(p) && p.Status.Enforcement.InSync && hasCondition(p, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason)
	})
	if got := f.members(); got["u:carol"] != 3 {
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
