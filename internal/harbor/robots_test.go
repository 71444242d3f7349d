package harbor

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
)

// TestRobots creates a project robot with one permission entry, lists it, refreshes its secret and
// deletes it; a second robot of the same name is ErrConflict.
func TestRobots(t *testing.T) {
	ctx := context.Background()
	h := harbortest.Start(t)
	id := h.AddProject("team-a", nil)
	other := h.AddProject("team-b", nil)
	c := newTestClient(t, h)
	sec, err := c.CreateRobot(ctx, Robot{Name: "ci-push", Description: "portcullis:team-a/production", Project: "team-a",
		Access: []Access{{"repository", "pull"}, {"repository", "push"}}})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Name != "robot$team-a+ci-push" || sec.Secret == "" || !sec.ExpiresAt.IsZero() {
		t.Fatalf("created %+v", sec)
	}
	if _, err := c.CreateRobot(ctx, Robot{Name: "ci-push", Project: "team-a", Access: []Access{{"repository", "pull"}}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("a second ci-push = %v, want ErrConflict", err)
	}
	robots, err := c.Robots(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(robots) != 1 || robots[0].Description != "portcullis:team-a/production" || robots[0].Project != "team-a" || len(robots[0].Access) != 2 {
		t.Fatalf("robots %+v", robots)
	}
	if others, err := c.Robots(ctx, other); err != nil || len(others) != 0 {
		t.Fatalf("team-b's robots = %v, %v; want none", others, err)
	}
	robots[0].Access, robots[0].Description = []Access{{"repository", "pull"}}, "portcullis:team-a/production (changed)"
	if err := c.UpdateRobot(ctx, robots[0]); err != nil {
		t.Fatal(err)
	}
	if robots, err = c.Robots(ctx, id); err != nil || len(robots) != 1 || len(robots[0].Access) != 1 || robots[0].Access[0].Action != "pull" ||
		robots[0].Description != "portcullis:team-a/production (changed)" {
		t.Fatalf("after the update: %+v, %v", robots, err)
	}
	fresh, err := c.RefreshRobotSecret(ctx, sec.ID)
	if err != nil || fresh == "" || fresh == sec.Secret {
		t.Fatalf("refreshed secret %q (%v), want a new one", fresh, err)
	}
	if err := c.DeleteRobot(ctx, sec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RefreshRobotSecret(ctx, sec.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refreshing a deleted robot = %v, want ErrNotFound", err)
	}
	if err := c.UpdateRobot(ctx, robots[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("updating a deleted robot = %v, want ErrNotFound", err)
	}
}

// TestImmutableRules creates, lists and deletes a project's immutable tag rules.
func TestImmutableRules(t *testing.T) {
	ctx := context.Background()
	h := harbortest.Start(t)
	h.AddProject("team-a", nil)
	c := newTestClient(t, h)
	if err := c.CreateImmutableRule(ctx, "team-a", ImmutableRule{TagPattern: "v*", RepoPattern: "**"}); err != nil {
		t.Fatal(err)
	}
	rules, err := c.ImmutableRules(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 || rules[0].TagPattern != "v*" || rules[0].RepoPattern != "**" || rules[0].Decoration() != "matches" || rules[0].ID == 0 {
		t.Fatalf("rules %+v", rules)
	}
	if err := c.CreateImmutableRule(ctx, "team-a", ImmutableRule{TagPattern: "sha256-*", TagDecoration: "excludes", RepoPattern: "api"}); err != nil {
		t.Fatal(err)
	}
	h.Mu.Lock()
	posted := h.Projects["team-a"].ImmutableRules[1]["tag_selectors"]
	h.Mu.Unlock()
	if sel, _ := posted.([]any); len(sel) != 1 || sel[0].(map[string]any)["decoration"] != "excludes" {
		t.Fatalf("posted tag selectors %v", posted)
	}
	if rules, err = c.ImmutableRules(ctx, "team-a"); err != nil || len(rules) != 2 || rules[1].TagDecoration != "excludes" || rules[1].TagPattern != "sha256-*" {
		t.Fatalf("rules %+v, %v", rules, err)
	}
	for _, r := range rules {
		if err := c.DeleteImmutableRule(ctx, "team-a", r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if rules, err := c.ImmutableRules(ctx, "team-a"); err != nil || len(rules) != 0 {
		t.Fatalf("after delete: %v, %v", rules, err)
	}
}

// TestArtifacts lists a nested repository's artifacts with tags and push times across pages; the
// repository name's "/" reaches Harbor escaped twice.
func TestArtifacts(t *testing.T) {
	ctx := context.Background()
	h := harbortest.Start(t)
	h.AddProject("team-a", nil)
	pushed := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	var arts []harbortest.Artifact
	for i := range 150 {
		arts = append(arts, harbortest.Artifact{Digest: "sha256:" + repeat64(i), Tags: []string{"v" + itoa(i)}, PushTime: pushed.Add(time.Duration(i) * time.Minute)})
	}
	h.Mu.Lock()
	h.Projects["team-a"].Repositories["tools/cli"] = arts
	h.Mu.Unlock()
	c := newTestClient(t, h)
	got, err := c.Artifacts(ctx, "team-a", "tools/cli")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 150 || got[149].Tags[0] != "v149" || !got[0].PushTime.Equal(pushed) || got[0].Digest != arts[0].Digest {
		t.Fatalf("%d artifacts, last %+v, first %+v", len(got), got[len(got)-1], got[0])
	}
	if _, err := c.Artifacts(ctx, "team-a", "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing repository = %v, want ErrNotFound", err)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func repeat64(i int) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 64)
	for j := range b {
		b[j] = hex[(i+j)%16]
	}
	return string(b)
}
