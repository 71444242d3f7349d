package harbor

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
)

// TestRetention creates a project's retention policy (linked by the project's retention_id),
// reads it back rule by rule, updates it, runs it dry, and deletes it; a second policy for the same
// project and an unknown ID are refused as Harbor refuses them.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	h := harbortest.Start(t)
	pid := h.AddProject("team-a", nil)
	h.Projects["team-a"].Repositories["api"] = []harbortest.Artifact{
		{Digest: "sha256:" + strings.Repeat("1", 64), Tags: []string{"v1"}, PushTime: time.Now().Add(-72 * time.Hour)},
		{Digest: "sha256:" + strings.Repeat("2", 64), Tags: []string{"v2"}, PushTime: time.Now().Add(-48 * time.Hour)},
		{Digest: "sha256:" + strings.Repeat("3", 64), Tags: []string{"v3"}, PushTime: time.Now().Add(-24 * time.Hour)}}
	c := newTestClient(t, h)
	if _, ok, err := c.LatestRetentionRun(ctx, 1); err != nil || ok {
		t.Fatalf("runs of a policy that never ran: %v %v", ok, err)
	}
	want := RetentionPolicy{ProjectID: pid, Rules: []RetentionRule{
		{Template: TemplateLatestPushedK, Param: 10, TagPattern: "{v*,release-*}", TagDecoration: "matches", RepoPattern: "**"},
		{Template: TemplateNDaysSinceLastPush, Param: 30, TagPattern: "**", TagDecoration: "matches", Untagged: true, RepoPattern: "api-*"},
		{Template: TemplateAlways, TagPattern: "nightly-*", TagDecoration: "excludes", RepoPattern: "**"},
	}}
	id, err := c.CreateRetention(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Project(ctx, "team-a")
	if err != nil || p.Metadata["retention_id"] != strconv.FormatInt(id, 10) {
		t.Fatalf("project metadata %v (%v): want retention_id %d", p.Metadata, err, id)
	}
	got, err := c.Retention(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want.ID = id
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, want)
	}
	if _, err := c.CreateRetention(ctx, want); !errors.Is(err, ErrInvalidResponse) {
		t.Fatalf("a second policy for the project = %v, want Harbor's 400 (ErrInvalidResponse)", err)
	}
	want.Rules, want.Cron = []RetentionRule{{Template: TemplateLatestPushedK, Param: 2, TagPattern: "**", TagDecoration: "matches", RepoPattern: "**"}}, "0 0 0 * * *"
	if err := c.UpdateRetention(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, err = c.Retention(ctx, id); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("after the update: %+v (%v)", got, err)
	}
	if err := c.TriggerRetention(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	h.Mu.Lock()
	runs := h.RetentionRuns
	h.Mu.Unlock()
	if len(runs) != 1 || !runs[0].DryRun || runs[0].PolicyID != id {
		t.Fatalf("runs %+v", runs)
	}
	run, ok, err := c.LatestRetentionRun(ctx, id)
	if err != nil || !ok || !run.DryRun || run.Status != "Succeed" || run.Total != 3 || run.Retained != 2 {
		t.Fatalf("latest run %+v %v %v: want the dry run keeping 2 of team-a/api's 3 artifacts (latestPushedK=2)", run, ok, err)
	}
	if err := c.DeleteRetention(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Retention(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reading a deleted policy = %v, want ErrNotFound", err)
	}
}
