package cli

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/retention"
)

// retentionPolicy is a policy keeping the latest n digests of repos; mode Enforce with dryRun false
// when enforce.
func retentionPolicy(repos string, n int32, enforce bool) *v1alpha1.RepositoryPolicy {
	p := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "cleanup", Namespace: "ops"}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "local"}, Repositories: []string{repos}, Mode: v1alpha1.ModeAudit,
		Retention: &v1alpha1.RetentionSpec{DryRun: ptr(true), Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(n)}}}}}
	if enforce {
		p.Spec.Mode, p.Spec.Retention.DryRun = v1alpha1.ModeEnforce, ptr(false)
	}
	return p
}

// TestPlanRetentionWhatIf: the outcome of each digest under the applied policy and the file's, and
// when that is a change (exit code 1): a new plan, dry run turned into deletions, the same plan, a
// retention removed, repositories narrowed, in-use protection turned off, no deletion budget.
func TestPlanRetentionWhatIf(t *testing.T) {
	d := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	listing := func(prefix string) retention.Listing {
		var imgs []policy.RetentionImage
		for i, c := range []string{"1", "2", "3"} {
			imgs = append(imgs, policy.RetentionImage{Digest: d(prefix + c)[:71], Tags: []string{"v" + c}, Created: now.AddDate(0, 0, -30+10*i)})
		}
		return retention.Listing{Images: imgs, Complete: true}
	}
	listings := map[string]retention.Listing{"ops/a": listing("a"), "ops/b": listing("b")}
	oldest := func(repo string) string { return listings[repo].Images[0].Digest }
	rows := func(r RetentionWhatIf) []string {
		var out []string
		for _, dg := range r.Digests {
			out = append(out, dg.Repository+"@"+dg.Digest[7:9]+" "+orDash(dg.Now)+">"+orDash(dg.WouldBe))
		}
		return out
	}
	pods := retention.NewPodImages()
	pods.Add("registry.example.com/ops/a@" + oldest("ops/a"))
	noRetention := retentionPolicy("ops/*", 1, false)
	noRetention.Spec.Retention = nil
	zeroBudget := retentionPolicy("ops/*", 2, true)
	zeroBudget.Spec.Retention.MaxDeletionsPerPass = ptr(int32(0))
	unprotected := retentionPolicy("ops/*", 2, false)
	unprotected.Spec.Retention.ProtectInUse = ptr(false)
	for _, c := range []struct {
		name          string
		file, applied *v1alpha1.RepositoryPolicy
		pods          *retention.PodImages
		want          []string
		changed       bool
	}{
		{"new plan, dry run", retentionPolicy("ops/*", 2, false), nil, nil, []string{"ops/a@a1 ->DryRun", "ops/b@b1 ->DryRun"}, true},
		{"dry run becomes deletions", retentionPolicy("ops/*", 2, true), retentionPolicy("ops/*", 2, false), nil,
			[]string{"ops/a@a1 DryRun>Delete", "ops/b@b1 DryRun>Delete"}, true},
		{"the same plan", retentionPolicy("ops/*", 2, true), retentionPolicy("ops/*", 2, true), nil, []string{"ops/a@a1 Delete>Delete", "ops/b@b1 Delete>Delete"}, false},
		{"fewer kept", retentionPolicy("ops/*", 1, true), retentionPolicy("ops/*", 2, true), nil,
			[]string{"ops/a@a2 Keep>Delete", "ops/b@b2 Keep>Delete", "ops/a@a1 Delete>Delete", "ops/b@b1 Delete>Delete"}, true},
		{"retention removed", noRetention, retentionPolicy("ops/*", 2, true), nil, []string{"ops/a@a1 Delete>-", "ops/b@b1 Delete>-"}, true},
		{"repositories narrowed", retentionPolicy("ops/a", 2, true), retentionPolicy("ops/*", 2, true), nil,
			[]string{"ops/b@b1 Delete>-", "ops/a@a1 Delete>Delete"}, true},
		{"in-use protection turned off", unprotected, retentionPolicy("ops/*", 2, false), pods,
			[]string{"ops/a@a1 Keep>DryRun", "ops/b@b1 DryRun>DryRun"}, true},
		{"no deletion budget", zeroBudget, retentionPolicy("ops/*", 2, false), nil, []string{"ops/a@a1 DryRun>DryRun", "ops/b@b1 DryRun>DryRun"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := PlanRetentionWhatIf(c.file, c.applied, nil, listings, c.pods, now)
			if !slices.Equal(rows(got), c.want) || got.Changed() != c.changed {
				t.Errorf("rows %v, changed %v; want %v, %v", rows(got), got.Changed(), c.want, c.changed)
			}
		})
	}
	// Why a plan deletes nothing, as the header says it.
	for p, want := range map[*v1alpha1.RepositoryPolicy]string{zeroBudget: "maxDeletionsPerPass 0", retentionPolicy("ops/*", 2, false): "mode Audit",
		retentionPolicy("ops/*", 2, true): ""} {
		if got := PlanRetentionWhatIf(p, nil, nil, listings, nil, now).Holds; got != want {
			t.Errorf("holds %q, want %q", got, want)
		}
	}
	enforcedDryRun := retentionPolicy("ops/*", 2, true)
	enforcedDryRun.Spec.Retention.DryRun = ptr(true)
	if got := holds(enforcedDryRun); got != "dryRun" {
		t.Errorf("mode Enforce with dryRun: holds %q", got)
	}
}

// TestListRepositories: a repository the registry no longer has is reported, not fatal; a failing
// one stops the listing with an error that says what to do; a cancelled context returns its error.
func TestListRepositories(t *testing.T) {
	reg := newAuthRegistry(t)
	reg.push(t, "ops/a", 1, "v1")
	reg.push(t, "ops/b", 1, "v1")
	rc := func() *registry.Client {
		c, err := registry.New(registry.Config{URL: reg.URL, Insecure: true, Auth: authn.FromConfig(authn.AuthConfig{Username: reg.user, Password: reg.pass})})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	got, missing, err := listRepositories(ctx, rc(), []string{"ops/a", "ops/gone", "ops/b"}, 0, false, io.Discard)
	if err != nil || len(got) != 2 || !slices.Equal(missing, []string{"ops/gone"}) {
		t.Errorf("listed %d, missing %v, %v; want ops/a and ops/b listed, ops/gone missing", len(got), missing, err)
	}
	reg.fail = func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/ops/b/") }
	if _, _, err := listRepositories(ctx, rc(), []string{"ops/a", "ops/b"}, 4, false, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "listing ops/b") || !strings.Contains(err.Error(), "--skip-retention") {
		t.Errorf("a failing repository: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := listRepositories(cancelled, rc(), []string{"ops/a"}, 4, false, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled context: %v", err)
	}
}

// TestRegistryClientRefuses: your own registry login is never sent over plain http to another
// machine, and a URL carrying credentials is refused.
func TestRegistryClientRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"registry.internal:5000":{"auth":"dTpw"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "ops"}, Spec: v1alpha1.RegistrySpec{URL: "http://registry.internal:5000", Insecure: true}}
	if _, _, err := registryClient(context.Background(), nil, reg, AuthKeychain); err == nil || !strings.Contains(err.Error(), "not sent over it") {
		t.Errorf("a login over plain http: %v", err)
	}
	if _, _, err := registryClient(context.Background(), nil, reg, AuthAnonymous); err != nil {
		t.Errorf("anonymous over plain http: %v", err)
	}
	reg.Spec.URL = "https://u:p@registry.internal"
	if _, _, err := registryClient(context.Background(), nil, reg, AuthAnonymous); err == nil || strings.Contains(err.Error(), "u:p") {
		t.Errorf("a URL with credentials: %v", err)
	}
}
