package controller

import (
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/portcullis-dev/portcullis/internal/harbor"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// harborFixture is a fake Harbor (held to its swagger) in front of a real Distribution, with
// project team-a, and a Registry of provider Harbor for it in a new namespace.
type harborFixture struct {
	ns   string
	h    *harbortest.Server
	dist *registrytest.Distribution
	reg  *v1alpha1.Registry
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
	return &harborFixture{ns: ns, h: h, dist: dist, reg: reg}
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

func (f *harborFixture) retention(project string) (map[string]any, int) {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	id, _ := strconv.ParseInt(f.h.Projects[project].Metadata["retention_id"], 10, 64)
	runs := 0
	for _, r := range f.h.RetentionRuns {
		if r.PolicyID == id && r.DryRun {
			runs++
		}
	}
	return f.h.Retentions[id], runs
}

// retentionSummary reads a stored Harbor retention policy: its cron and each rule as
// "template=param tags(decoration) repos untagged".
func retentionSummary(pol map[string]any) (string, []string) {
	raw, _ := json.Marshal(pol)
	var p struct {
		Trigger struct {
			Settings struct{ Cron string }
		}
		Rules []struct {
			Template       string
			Params         map[string]float64
			TagSelectors   []struct{ Decoration, Pattern, Extras string } `json:"tag_selectors"`
			ScopeSelectors map[string][]struct{ Pattern string }          `json:"scope_selectors"`
		}
	}
	_ = json.Unmarshal(raw, &p)
	var rules []string
	for _, r := range p.Rules {
		rules = append(rules, fmt.Sprintf("%s=%v %s(%s) %s %s", r.Template, r.Params[r.Template], r.TagSelectors[0].Pattern,
			r.TagSelectors[0].Decoration, r.ScopeSelectors["repository"][0].Pattern, r.TagSelectors[0].Extras))
	}
	return p.Trigger.Settings.Cron, rules
}

// TestHarborRetention: spec.retention becomes the project's Harbor retention policy: created
// unscheduled with a dry run while dryRun is true, scheduled daily once it is false, emptied when
// the spec drops it; a policy with rules made by hand is left alone; a spec Harbor cannot run
// (protectInUse left on) is Stalled.
func TestHarborRetention(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "keep", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Robots: []v1alpha1.Robot{{Name: "ci", Permissions: []string{"repository:pull"}, SecretName: "keep-ci"}}},
		Retention: &v1alpha1.RetentionSpec{ProtectInUse: ptr(false), Rules: []v1alpha1.RetentionRule{
			{Tags: v1alpha1.PatternSelector{Include: []string{"v*", "release-*"}}, KeepLatest: ptr(int32(10)), KeepWithinDays: ptr(int32(30))},
			{Tags: v1alpha1.PatternSelector{Exclude: []string{"v*"}}, KeepLatest: ptr(int32(1)), Untagged: true}}},
	}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pol, "Harbor in sync", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	stored, runs := f.retention("team-a")
	cron, rules := retentionSummary(stored)
	wantRules := []string{`latestPushedK=10 {v*,release-*}(matches) ** {"untagged":false}`, `nDaysSinceLastPush=30 {v*,release-*}(matches) ** {"untagged":false}`,
		`latestPushedK=1 v*(excludes) ** {"untagged":true}`}
	if cron != "" || !slices.Equal(rules, wantRules) || runs != 1 {
		t.Fatalf("dry-run retention: cron %q, %d dry runs, rules\n%q\nwant\n%q", cron, runs, rules, wantRules)
	}
	if owned := pol.Status.Enforcement.OwnedRetentionPolicies; len(owned) != 1 || owned[0].Project != "team-a" {
		t.Fatalf("owned retention policies %+v", owned)
	}
	waitFor(t, pol, "the Harbor note in status.retention", func(p *v1alpha1.RepositoryPolicy) bool {
		return p.Status.Retention != nil && strings.HasPrefix(p.Status.Retention.Message, "Harbor runs retention itself")
	})

	// Nothing changed: no write (the stored rules read back equal).
	writes := f.writes()
	f.kick(t, "keep-ci")
	if n := f.writes() - writes; n != 0 {
		t.Fatalf("a pass with nothing to change made %d writes", n)
	}

	// The robot is renamed, its secretName kept: the new robot's credentials replace the old one's.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Access.Robots[0].Name = "deployer" })
	waitFor(t, pol, "the robot renamed", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	renamed := f.robot("robot$team-a+deployer")
	if renamed == nil || f.robot("robot$team-a+ci") != nil {
		t.Fatalf("after the rename: deployer %+v, ci still there: %v", renamed, f.robot("robot$team-a+ci") != nil)
	}
	if user, pass, _ := robotCreds(t, f.ns, "keep-ci"); user != renamed.Name || pass != renamed.Secret {
		t.Fatalf("Secret keep-ci holds %s, want the renamed robot's credentials", user)
	}

	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.DryRun = ptr(false) })
	waitFor(t, pol, "scheduled", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	stored, runs = f.retention("team-a")
	if cron, rules := retentionSummary(stored); cron != "0 0 0 * * *" || len(rules) != 3 || runs != 1 {
		t.Fatalf("after dryRun false: cron %q, rules %q, %d dry runs", cron, rules, runs)
	}

	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention = nil })
	waitFor(t, pol, "emptied", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	stored, _ = f.retention("team-a")
	if cron, rules := retentionSummary(stored); stored == nil || cron != "" || len(rules) != 0 {
		t.Fatalf("after spec.retention was removed: %v (cron %q, rules %q); want the policy kept, empty and unscheduled", stored, cron, rules)
	}

	// team-b's retention policy was made by hand: left alone.
	pid := f.h.AddProject("team-b", nil)
	c, err := harbor.New(harbor.Config{URL: f.h.URL, Username: f.h.Username, Password: f.h.Password})
	if err != nil {
		t.Fatal(err)
	}
	handID, err := c.CreateRetention(ctx, harbor.RetentionPolicy{ProjectID: pid, Rules: []harbor.RetentionRule{
		{Template: harbor.TemplateAlways, TagPattern: "**", TagDecoration: "matches", RepoPattern: "**"}}})
	if err != nil {
		t.Fatal(err)
	}
	other := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-b/**"}, Mode: v1alpha1.ModeEnforce,
		Retention: &v1alpha1.RetentionSpec{ProtectInUse: ptr(false), Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(int32(3))}}},
	}}
	if err := k8sClient.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, other, "blocked", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.Failed })
	if msg := other.Status.Enforcement.Message; !strings.Contains(msg, fmt.Sprintf("retention policy (ID %d) with 1 rules made outside Portcullis", handID)) {
		t.Errorf("message %q", msg)
	}
	if got, err := c.Retention(ctx, handID); err != nil || len(got.Rules) != 1 || got.Rules[0].Template != harbor.TemplateAlways {
		t.Fatalf("the retention policy made by hand was changed: %+v %v", got, err)
	}

	// Harbor cannot see Pods: protectInUse left at its default is refused, not weakened.
	inUse := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "in-use", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-c/**"}, Mode: v1alpha1.ModeEnforce,
		Retention: &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(int32(3))}}},
	}}
	if err := k8sClient.Create(ctx, inUse); err != nil {
		t.Fatal(err)
	}
	waitFor(t, inUse, "NotExpressible", func(p *v1alpha1.RepositoryPolicy) bool {
		return hasCondition(p, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.NotExpressibleReason)
	})
}

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
