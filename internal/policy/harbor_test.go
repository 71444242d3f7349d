package policy

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func TestResolveHarborScope(t *testing.T) {
	robots := &v1alpha1.AccessSpec{Robots: []v1alpha1.Robot{{Name: "ci", Permissions: []string{"repository:pull"}, SecretName: "ci"}}}
	members := &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleDeveloper}}}
	cases := []struct {
		name     string
		spec     v1alpha1.RepositoryPolicySpec
		projects []string
		repos    map[string][]string
		err      string // a fragment of the error; "" for none
	}{
		{name: "immutability on part of two projects",
			spec:     v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-b/api-*", "team-a/**", "team-b/tools/*"}, Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*"}}},
			projects: []string{"team-a", "team-b"}, repos: map[string][]string{"team-a": {"**"}, "team-b": {"api-*", "tools/*"}}},
		{name: "members on a whole project", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**", "team-a/api"}, Access: members},
			projects: []string{"team-a"}, repos: map[string][]string{"team-a": {"**", "api"}}},
		{name: "a wildcard project", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"**"}, Access: members}, err: "does not name a Harbor project"},
		{name: "a glob in the project", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-*/**"}, Access: members}, err: `"team-*/**" does not name`},
		{name: "no slash", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a"}, Access: members}, err: "does not name"},
		{name: "members on part of a project", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/api"}, Access: members}, err: "whole Harbor projects"},
		{name: "settings on part of a project", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**", "team-b/api"},
			RegistrySettings: &v1alpha1.RegistrySettings{ScanOnPush: ptr(true)}}, err: `project "team-b": use team-b/**`},
		{name: "robots in two projects", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**", "team-b/**"}, Access: robots}, err: "exactly one project"},
		{name: "robots in one project", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"}, Access: robots},
			projects: []string{"team-a"}, repos: map[string][]string{"team-a": {"**"}}},
		{name: "every tag, written with excludes", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*", "*", "**"}}},
			projects: []string{"team-a"}, repos: map[string][]string{"team-a": {"**"}}},
		{name: "a tag pattern that freezes signatures", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*", "s*"}}}, err: `"s*" also matches supply-chain tags`},
		{name: "a tag pattern that freezes every .sig tag", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"*.sig"}}}, err: "also matches supply-chain tags"},
		{name: "a tag pattern that freezes the referrers fallback tag", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"sha256-*"}}}, err: "also matches supply-chain tags"},
		{name: "a tag pattern that freezes the signature tags of digests starting with f", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"sha256-f*.sig"}}}, err: "also matches supply-chain tags"},
		{name: "immutability narrowed by spec.tags it includes", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Tags: v1alpha1.PatternSelector{Include: []string{"v*", "release-*"}}, Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*"}}},
			projects: []string{"team-a"}, repos: map[string][]string{"team-a": {"**"}}},
		{name: "immutability wider than spec.tags", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Tags: v1alpha1.PatternSelector{Include: []string{"v1.*"}}, Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*"}}}, err: "cannot intersect"},
		{name: "spec.tags excludes", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Tags: v1alpha1.PatternSelector{Exclude: []string{"*-rc*"}}, Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*"}}}, err: "cannot intersect"},
		{name: "retention handed to Harbor", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/api-*"}, Retention: handedToHarbor()},
			projects: []string{"team-a"}, repos: map[string][]string{"team-a": {"api-*"}}},
		{name: "retention protecting in-use images", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Retention: func() *v1alpha1.RetentionSpec { r := handedToHarbor(); r.ProtectInUse = nil; return r }()}, err: "cannot see which images Pods use"},
		{name: "retention with a deletion cap", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Retention: func() *v1alpha1.RetentionSpec { r := handedToHarbor(); r.MaxDeletionsPerPass = ptr(int32(5)); return r }()}, err: "has no cap"},
		{name: "retention with spec.tags", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"}, Tags: v1alpha1.PatternSelector{Include: []string{"v*"}},
			Retention: handedToHarbor()}, err: "cannot intersect its tags with spec.tags"},
		{name: "a retention rule with include and exclude", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Retention: func() *v1alpha1.RetentionSpec {
				r := handedToHarbor()
				r.Rules[0].Tags = v1alpha1.PatternSelector{Include: []string{"v*"}, Exclude: []string{"v0*"}}
				return r
			}()}, err: "include or exclude, not both"},
		{name: "too many retention rules", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/**"},
			Retention: func() *v1alpha1.RetentionSpec {
				r := handedToHarbor()
				for range 7 {
					r.Rules = append(r.Rules, v1alpha1.RetentionRule{KeepLatest: ptr(int32(1)), KeepWithinDays: ptr(int32(1))})
				}
				return r
			}()}, err: "the rules need 16 Harbor rules"},
		{name: "too many rules", spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"team-a/a", "team-a/b", "team-a/c", "team-a/d"},
			Immutability: &v1alpha1.ImmutabilitySpec{Tags: []string{"v*", "r*", "x*", "t*"}}}, err: "would need 16 immutable tag rules"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ResolveHarborScope(&c.spec)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Projects, c.projects) || len(got.Repositories) != len(c.repos) {
				t.Fatalf("scope %+v, want projects %v and %v", got, c.projects, c.repos)
			}
			for p, want := range c.repos {
				if !slices.Equal(got.Repositories[p], want) {
					t.Errorf("project %s: %v, want %v", p, got.Repositories[p], want)
				}
			}
		})
	}
}

func TestWritesToHarbor(t *testing.T) {
	for _, c := range []struct {
		spec v1alpha1.RepositoryPolicySpec
		want bool
	}{
		{v1alpha1.RepositoryPolicySpec{}, false},
		{v1alpha1.RepositoryPolicySpec{Access: &v1alpha1.AccessSpec{}}, false},
		{v1alpha1.RepositoryPolicySpec{Retention: &v1alpha1.RetentionSpec{}}, true},
		{v1alpha1.RepositoryPolicySpec{Access: &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "a"}}}}, true},
		{v1alpha1.RepositoryPolicySpec{Immutability: &v1alpha1.ImmutabilitySpec{}}, true},
		{v1alpha1.RepositoryPolicySpec{RegistrySettings: &v1alpha1.RegistrySettings{}}, true},
	} {
		if got := WritesToHarbor(&c.spec); got != c.want {
			t.Errorf("WritesToHarbor(%+v) = %v", c.spec, got)
		}
	}
}

func TestHarborCVEAllowlist(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	at := func(d int) *metav1.Time { return &metav1.Time{Time: now.AddDate(0, 0, d)} }
	spec := &v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{
		Exceptions: []v1alpha1.VulnerabilityException{
			{ID: "CVE-3", Expires: at(30)}, {ID: "CVE-1"}, {ID: "CVE-2", Expires: at(-1)}, {ID: "CVE-4", Expires: at(10)}}}}}
	ids, expires := HarborCVEAllowlist(spec, now)
	if !slices.Equal(ids, []string{"CVE-1", "CVE-3", "CVE-4"}) || !expires.Equal(now.AddDate(0, 0, 10)) {
		t.Fatalf("allowlist %v until %v; want the unexpired IDs until the earliest expiry", ids, expires)
	}
	// Once CVE-4 expires, the list drops it and runs to CVE-3's expiry.
	ids, expires = HarborCVEAllowlist(spec, now.AddDate(0, 0, 10))
	if !slices.Equal(ids, []string{"CVE-1", "CVE-3"}) || !expires.Equal(now.AddDate(0, 0, 30)) {
		t.Fatalf("after CVE-4 expired: %v until %v", ids, expires)
	}
	if ids, expires = HarborCVEAllowlist(&v1alpha1.RepositoryPolicySpec{}, now); ids != nil || !expires.IsZero() {
		t.Fatalf("no exceptions: %v %v", ids, expires)
	}
}

func TestFirstClaim(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := HarborClaimant{Name: "a", Created: t0.Add(time.Hour), Projects: []string{"team-a", "team-b"}}
	b := HarborClaimant{Name: "b", Created: t0, Projects: []string{"team-b"}}
	c := HarborClaimant{Name: "c", Created: t0.Add(time.Hour), Projects: []string{"team-a"}}
	if p, owner, ok := FirstClaim(a, []HarborClaimant{a, c, b}); !ok || p != "team-b" || owner != "b" {
		t.Fatalf("a: %s %s %v; want team-b owned by the older b", p, owner, ok)
	}
	if _, _, ok := FirstClaim(b, []HarborClaimant{a, b, c}); ok {
		t.Fatal("b is the oldest and owns team-b")
	}
	// a lost team-b to b, so it owns nothing, and c (as old as a) gets team-a.
	if p, owner, ok := FirstClaim(c, []HarborClaimant{a, b}); ok {
		t.Fatalf("c lost %s to %s; a lost to b and owns nothing", p, owner)
	}
	// Created in the same second, the name decides.
	d := HarborClaimant{Name: "d", Created: t0.Add(time.Hour), Projects: []string{"team-a"}}
	if p, owner, ok := FirstClaim(d, []HarborClaimant{a, b, c}); !ok || p != "team-a" || owner != "c" {
		t.Fatalf("d: %s %s %v; want team-a owned by c", p, owner, ok)
	}
	// A younger policy that holds team-b keeps it against the older b switching to Enforce.
	holder := HarborClaimant{Name: "z", Created: t0.Add(2 * time.Hour), Projects: []string{"team-b"}, Holding: true}
	if p, owner, ok := FirstClaim(b, []HarborClaimant{holder}); !ok || p != "team-b" || owner != "z" {
		t.Fatalf("b against the holder z: %s %s %v", p, owner, ok)
	}
	if _, _, ok := FirstClaim(holder, []HarborClaimant{b}); ok {
		t.Fatal("the holder z must keep team-b")
	}
	if _, _, ok := FirstClaim(HarborClaimant{Name: "e", Created: t0, Projects: []string{"team-c"}}, []HarborClaimant{a, b, c}); ok {
		t.Fatal("team-c has no other claimant")
	}
}

func ptr[T any](v T) *T { return &v }

// handedToHarbor is a retention spec Harbor can run: protectInUse off, no deletion cap.
func handedToHarbor() *v1alpha1.RetentionSpec {
	return &v1alpha1.RetentionSpec{ProtectInUse: ptr(false), Rules: []v1alpha1.RetentionRule{
		{Tags: v1alpha1.PatternSelector{Include: []string{"v*"}}, KeepLatest: ptr(int32(10)), KeepWithinDays: ptr(int32(30))}}}
}
