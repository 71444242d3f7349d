package harbor

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
)

func newTestClient(t *testing.T, h *harbortest.Server) *Client {
	t.Helper()
	c, err := New(Config{URL: h.URL, Username: h.Username, Password: h.Password})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestProjectMetadata reads a project with its metadata by name and changes its security switches;
// every request and response is checked against Harbor's swagger by the fake.
func TestProjectMetadata(t *testing.T) {
	ctx := context.Background()
	h := harbortest.Start(t)
	h.AddProject("team-a", map[string]string{"auto_scan": "false", "severity": "low"})
	h.AddProject("1234", nil) // a numeric name is a name, not an ID
	c := newTestClient(t, h)

	p, err := c.Project(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "team-a" || p.ID == 0 || p.Metadata["auto_scan"] != "false" || p.Metadata["severity"] != "low" {
		t.Fatalf("project %+v", p)
	}
	if _, err := c.Project(ctx, "1234"); err != nil {
		t.Fatalf("a numeric project name: %v", err)
	}
	if err := c.UpdateProjectMetadata(ctx, "team-a", map[string]string{"auto_scan": "true", "prevent_vul": "true",
		"severity": "high", "enable_content_trust_cosign": "true"}); err != nil {
		t.Fatal(err)
	}
	p, err = c.Project(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"auto_scan": "true", "prevent_vul": "true", "severity": "high", "enable_content_trust_cosign": "true", "public": "false"} {
		if p.Metadata[k] != v {
			t.Errorf("metadata %s = %q, want %q (all: %v)", k, p.Metadata[k], v, p.Metadata)
		}
	}
	if len(p.CVEAllowlist.IDs) != 0 || !p.CVEAllowlist.ExpiresAt.IsZero() {
		t.Fatalf("a new project's allowlist %+v, want empty", p.CVEAllowlist)
	}
	expires := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := c.SetCVEAllowlist(ctx, "team-a", CVEAllowlist{IDs: []string{"CVE-2021-38561", "CVE-2022-0001"}, ExpiresAt: expires}); err != nil {
		t.Fatal(err)
	}
	if p, err = c.Project(ctx, "team-a"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.CVEAllowlist.IDs, []string{"CVE-2021-38561", "CVE-2022-0001"}) || !p.CVEAllowlist.ExpiresAt.Equal(expires) ||
		p.Metadata["reuse_sys_cve_allowlist"] != "false" || p.Metadata["auto_scan"] != "true" {
		t.Fatalf("after setting the allowlist: %+v", p)
	}
	if err := c.SetCVEAllowlist(ctx, "team-a", CVEAllowlist{}); err != nil {
		t.Fatal(err)
	}
	if p, err = c.Project(ctx, "team-a"); err != nil || len(p.CVEAllowlist.IDs) != 0 || !p.CVEAllowlist.ExpiresAt.IsZero() {
		t.Fatalf("after clearing the allowlist: %+v, %v", p.CVEAllowlist, err)
	}
}

// TestMembers adds users and groups, pages through more than one page, changes a role and removes a
// member; a duplicate is ErrConflict, removing twice is no error (as in Harbor), and changing a
// removed member's role is ErrNotFound.
func TestMembers(t *testing.T) {
	ctx := context.Background()
	h := harbortest.Start(t)
	h.AddProject("team-a", nil)
	h.Users["alice"], h.Groups["team-a-admins"] = true, true
	for i := range 120 {
		h.Users["u"+string(rune('a'+i%26))+string(rune('a'+i/26))] = true
	}
	c := newTestClient(t, h)
	if err := c.AddMember(ctx, "team-a", Member{Kind: UserMember, Name: "alice", RoleID: 2}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddMember(ctx, "team-a", Member{Kind: GroupMember, Name: "team-a-admins", RoleID: 4, GroupType: 3}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddMember(ctx, "team-a", Member{Kind: UserMember, Name: "alice", RoleID: 2}); !errors.Is(err, ErrConflict) {
		t.Fatalf("adding alice twice = %v, want ErrConflict", err)
	}
	// An LDAP group is added by DN; Harbor onboards it and it can then be looked up by DN.
	const dn = "cn=ops,ou=groups,dc=example,dc=com"
	h.LDAPGroups[dn] = "ops"
	if _, found, err := c.LDAPGroupName(ctx, dn); err != nil || found {
		t.Fatalf("an LDAP group not onboarded yet: found %v, %v", found, err)
	}
	if err := c.AddMember(ctx, "team-a", Member{Kind: GroupMember, GroupType: GroupTypeLDAP, GroupDN: dn, RoleID: 2}); err != nil {
		t.Fatal(err)
	}
	if name, found, err := c.LDAPGroupName(ctx, dn); err != nil || !found || name != "ops" {
		t.Fatalf("LDAP group %q: %q %v %v", dn, name, found, err)
	}
	for i := range 120 {
		if err := c.AddMember(ctx, "team-a", Member{Kind: UserMember, Name: "u" + string(rune('a'+i%26)) + string(rune('a'+i/26)), RoleID: 3}); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := c.Members(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 123 {
		t.Fatalf("%d members, want 123 across two pages", len(ms))
	}
	var alice Member
	for _, m := range ms {
		if m.Name == "alice" {
			alice = m
		}
	}
	if alice.Kind != UserMember || alice.RoleID != 2 {
		t.Fatalf("alice %+v", alice)
	}
	if err := c.SetMemberRole(ctx, "team-a", alice.ID, 4); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveMember(ctx, "team-a", alice.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveMember(ctx, "team-a", alice.ID); err != nil {
		t.Fatalf("removing alice again = %v; Harbor answers 200 for a membership that is gone", err)
	}
	if err := c.SetMemberRole(ctx, "team-a", alice.ID, 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("changing a removed member's role = %v, want ErrNotFound", err)
	}
}

// TestErrors maps Harbor's answers to the error kinds: wrong credentials, a missing project, and
// faults (403, 429 with Retry-After, 500, 501).
func TestErrors(t *testing.T) {
	ctx := context.Background()
	h := harbortest.Start(t)
	h.AddProject("team-a", nil)
	bad, err := New(Config{URL: h.URL, Username: "admin", Password: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Project(ctx, "team-a"); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong password = %v, want ErrUnauthorized", err)
	}
	c := newTestClient(t, h)
	if _, err := c.Project(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing project = %v, want ErrNotFound", err)
	}
	for code, want := range map[int]error{http.StatusForbidden: ErrForbidden, http.StatusTooManyRequests: ErrRateLimited,
		http.StatusInternalServerError: ErrUnavailable} {
		h.Mu.Lock()
		h.Faults = map[string]int{"GET /api/v2.0/projects/team-a/members": code}
		h.Mu.Unlock()
		_, err := c.Members(ctx, "team-a")
		if !errors.Is(err, want) {
			t.Errorf("HTTP %d = %v, want %v", code, err, want)
		}
		// Harbor's message (the fake says "injected fault") never reaches the error text.
		if err != nil && strings.Contains(err.Error(), "injected") {
			t.Errorf("HTTP %d: the error %q carries Harbor's message", code, err)
		}
	}
	if _, err := New(Config{URL: "ftp://harbor"}); err == nil {
		t.Error("an ftp URL must be refused")
	}
}
