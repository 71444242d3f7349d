// Package policy holds Portcullis's pure policy logic: which repositories and tags a policy selects,
// and later the verdicts and retention plans. No I/O and no clock it does not get from its caller.
package policy

import (
	"github.com/bmatcuk/doublestar/v4"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// MatchAny reports whether name matches at least one doublestar pattern
// (https://github.com/bmatcuk/doublestar#patterns). An invalid pattern matches nothing; the API's
// validation and the controllers' Stalled reasons report it.
func MatchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, err := doublestar.Match(p, name); err == nil && ok {
			return true
		}
	}
	return false
}

// Selects reports whether a PatternSelector selects name: it matches an include pattern (or include
// is empty) and no exclude pattern.
func Selects(s v1alpha1.PatternSelector, name string) bool {
	if len(s.Include) > 0 && !MatchAny(s.Include, name) {
		return false
	}
	return !MatchAny(s.Exclude, name)
}

// InvalidPattern returns the first pattern of patterns that doublestar cannot parse, or "".
func InvalidPattern(patterns ...[]string) string {
	for _, ps := range patterns {
		for _, p := range ps {
			if !doublestar.ValidatePattern(p) {
				return p
			}
		}
	}
	return ""
}

// Selection is what a set of RepositoryPolicies of one Registry selects.
type Selection struct {
	policies []v1alpha1.RepositoryPolicy
}

// NewSelection returns the selection of policies (all referencing the same Registry).
func NewSelection(policies []v1alpha1.RepositoryPolicy) Selection {
	return Selection{policies: policies}
}

// Repository reports whether some policy governs repo (matches one of its spec.repositories).
func (s Selection) Repository(repo string) bool {
	for i := range s.policies {
		if MatchAny(s.policies[i].Spec.Repositories, repo) {
			return true
		}
	}
	return false
}

// Tag reports whether some policy that governs repo selects tag (spec.tags).
func (s Selection) Tag(repo, tag string) bool {
	for i := range s.policies {
		p := &s.policies[i]
		if MatchAny(p.Spec.Repositories, repo) && Selects(p.Spec.Tags, tag) {
			return true
		}
	}
	return false
}

// Empty reports whether there are no policies.
func (s Selection) Empty() bool { return len(s.policies) == 0 }
