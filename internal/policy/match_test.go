package policy

import (
	"testing"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func TestSelects(t *testing.T) {
	cases := []struct {
		sel  v1alpha1.PatternSelector
		name string
		want bool
	}{
		{v1alpha1.PatternSelector{}, "anything/at/all", true},
		{v1alpha1.PatternSelector{Include: []string{"team-a/*"}}, "team-a/api", true},
		{v1alpha1.PatternSelector{Include: []string{"team-a/*"}}, "team-a/sub/api", false},
		{v1alpha1.PatternSelector{Include: []string{"team-a/**"}}, "team-a/sub/api", true},
		{v1alpha1.PatternSelector{Include: []string{"**"}, Exclude: []string{"scratch/**"}}, "scratch/x", false},
		{v1alpha1.PatternSelector{Exclude: []string{"*-dev"}}, "v1.2-dev", false},
		{v1alpha1.PatternSelector{Exclude: []string{"*-dev"}}, "v1.2", true},
		{v1alpha1.PatternSelector{Include: []string{"v{1,2}.*"}}, "v2.0", true},
		{v1alpha1.PatternSelector{Include: []string{"v[0-9]*"}}, "latest", false},
		{v1alpha1.PatternSelector{Include: []string{"[invalid"}}, "[invalid", false},
	}
	for _, tc := range cases {
		if got := Selects(tc.sel, tc.name); got != tc.want {
			t.Errorf("Selects(%+v, %q) = %v, want %v", tc.sel, tc.name, got, tc.want)
		}
	}
}

func TestInvalidPattern(t *testing.T) {
	if p := InvalidPattern([]string{"ok/**"}, []string{"v*", "[bad"}); p != "[bad" {
		t.Fatalf("InvalidPattern = %q, want [bad", p)
	}
	if p := InvalidPattern([]string{"**", "{a,b}"}); p != "" {
		t.Fatalf("InvalidPattern = %q, want none", p)
	}
}

func TestSelection(t *testing.T) {
	pol := func(repos []string, tags v1alpha1.PatternSelector) v1alpha1.RepositoryPolicy {
		return v1alpha1.RepositoryPolicy{Spec: v1alpha1.RepositoryPolicySpec{Repositories: repos, Tags: tags}}
	}
	s := NewSelection([]v1alpha1.RepositoryPolicy{
		pol([]string{"team-a/**"}, v1alpha1.PatternSelector{Include: []string{"v*"}}),
		pol([]string{"team-b/api"}, v1alpha1.PatternSelector{}),
	})
	cases := []struct {
		repo, tag       string
		wantRepo, wantT bool
	}{
		{"team-a/api", "v1", true, true},
		{"team-a/api", "latest", true, false}, // only team-a's policy governs it
		{"team-b/api", "latest", true, true},
		{"team-b/web", "v1", false, false},
	}
	for _, tc := range cases {
		if got := s.Repository(tc.repo); got != tc.wantRepo {
			t.Errorf("Repository(%q) = %v, want %v", tc.repo, got, tc.wantRepo)
		}
		if got := s.Tag(tc.repo, tc.tag); got != tc.wantT {
			t.Errorf("Tag(%q, %q) = %v, want %v", tc.repo, tc.tag, got, tc.wantT)
		}
	}
	if !NewSelection(nil).Empty() || s.Empty() {
		t.Error("Empty is wrong")
	}
}
