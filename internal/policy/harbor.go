package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// HarborMaxImmutableRules is Harbor's limit of immutable tag rules per project
// (src/pkg/immutable/model: 15, the same as for retention rules).
const HarborMaxImmutableRules = 15

// HarborScope is what a policy governs in Harbor, where every repository is "<project>/<name>": the
// projects, and in each the patterns over repository names inside it ("**", "api-*").
type HarborScope struct {
	// Projects are the project names, sorted.
	Projects []string
	// Repositories maps a project to its patterns inside the project, in spec order.
	Repositories map[string][]string
}

// WritesToHarbor reports whether a policy has anything to write to a Harbor registry: members or
// robots, immutable tag rules, or security switches. Only such a policy claims projects.
func WritesToHarbor(spec *v1alpha1.RepositoryPolicySpec) bool {
	a := spec.Access
	return (a != nil && (len(a.Members) > 0 || len(a.Robots) > 0)) || spec.Immutability != nil || spec.RegistrySettings != nil ||
		spec.Retention != nil
}

// ResolveHarborScope maps spec.repositories onto Harbor projects and checks that Harbor can express
// what the policy asks for there. Its error says which field asks for what and why Harbor cannot
// hold it (the policy is rejected, never weakened):
//   - every pattern must name its project literally: "<project>/<pattern>";
//   - members, robots and security switches apply to whole projects, so with access or
//     registrySettings every project needs a "<project>/**" pattern;
//   - a robot has exactly one project permission entry, so robots need exactly one project;
//   - an immutable tag rule has one tag selector (matches or excludes one pattern) and one repository
//     pattern, so every tag ("**") is written as "excludes sha256-*" (HarborImmutableTags) and any
//     other pattern that would also freeze cosign's signature tags (sha256-<hex>.sig, .att, .sbom, and
//     the referrers fallback tag sha256-<hex>) is refused, spec.tags may only narrow immutability to
//     patterns it includes itself, and a project holds at most 15 rules;
//   - Harbor runs retention itself: it cannot see Pods (protectInUse must be false), does not cap
//     deletions (maxDeletionsPerPass must be absent), cannot intersect a rule's tags with spec.tags
//     (spec.tags must be empty), takes one tag selector per rule (include or exclude, not both), and
//     holds at most 15 rules per project (a rule with keepLatest and keepWithinDays takes two).
func ResolveHarborScope(spec *v1alpha1.RepositoryPolicySpec) (HarborScope, error) {
	scope := HarborScope{Repositories: map[string][]string{}}
	for _, p := range spec.Repositories {
		project, rest, ok := strings.Cut(p, "/")
		if !ok || project == "" || rest == "" || strings.ContainsAny(project, `*?[]{}\`) {
			return HarborScope{}, fmt.Errorf("spec.repositories: %q does not name a Harbor project: write <project>/<pattern>, e.g. team-a/**", p)
		}
		if _, seen := scope.Repositories[project]; !seen {
			scope.Projects = append(scope.Projects, project)
		}
		scope.Repositories[project] = append(scope.Repositories[project], rest)
	}
	slices.Sort(scope.Projects)
	a := spec.Access
	if (a != nil && (len(a.Members) > 0 || len(a.Robots) > 0)) || spec.RegistrySettings != nil {
		for _, project := range scope.Projects {
			if !slices.Contains(scope.Repositories[project], "**") {
				return HarborScope{}, fmt.Errorf("spec.access and spec.registrySettings apply to whole Harbor projects, but the policy governs only %v of project %q: use %s/**",
					scope.Repositories[project], project, project)
			}
		}
	}
	if a != nil && len(a.Robots) > 0 && len(scope.Projects) != 1 {
		return HarborScope{}, fmt.Errorf("spec.access.robots: a Harbor robot account has permissions in exactly one project, and the policy governs %d (%s): put robots in a policy of one project",
			len(scope.Projects), strings.Join(scope.Projects, ", "))
	}
	if im := spec.Immutability; im != nil {
		for _, t := range im.Tags {
			if _, ok := HarborImmutableTags(t); !ok {
				return HarborScope{}, fmt.Errorf("spec.immutability.tags: %q also matches supply-chain tags (sha256-<hex>.sig, .att, .sbom, or the referrers fallback tag sha256-<hex>, for some digest) and not every tag, and one Harbor tag selector cannot both match it and exclude them: signing would fail; use a narrower pattern such as v*, or ** (every tag but sha256-*)", t)
			}
			if len(spec.Tags.Exclude) > 0 || (len(spec.Tags.Include) > 0 && !slices.Contains(spec.Tags.Include, t)) {
				return HarborScope{}, fmt.Errorf("spec.immutability.tags: %q is not among spec.tags.include (or spec.tags has exclude patterns), and a Harbor immutable rule cannot intersect tag patterns: it would freeze tags the policy does not select", t)
			}
		}
		for _, project := range scope.Projects {
			if n := len(scope.Repositories[project]) * len(im.Tags); n > HarborMaxImmutableRules {
				return HarborScope{}, fmt.Errorf("spec.immutability: project %q would need %d immutable tag rules (%d repository patterns x %d tag patterns); Harbor allows %d",
					project, n, len(scope.Repositories[project]), len(im.Tags), HarborMaxImmutableRules)
			}
		}
	}
	if err := harborRetention(spec); err != nil {
		return HarborScope{}, err
	}
	return scope, nil
}

func harborRetention(spec *v1alpha1.RepositoryPolicySpec) error {
	ret := spec.Retention
	if ret == nil {
		return nil
	}
	switch {
	case ret.ProtectInUse == nil || *ret.ProtectInUse:
		return fmt.Errorf("spec.retention.protectInUse: Harbor runs retention itself and cannot see which images Pods use; set protectInUse: false to hand retention to Harbor")
	case ret.MaxDeletionsPerPass != nil:
		return fmt.Errorf("spec.retention.maxDeletionsPerPass: Harbor deletes everything a run selects and has no cap; remove the field to hand retention to Harbor")
	case len(spec.Tags.Include) > 0 || len(spec.Tags.Exclude) > 0:
		return fmt.Errorf("spec.retention with spec.tags: a Harbor retention rule cannot intersect its tags with spec.tags, so tags outside spec.tags would be deleted; put the tag patterns in the retention rules")
	}
	n := 0
	for i, r := range ret.Rules {
		if len(r.Tags.Include) > 0 && len(r.Tags.Exclude) > 0 {
			return fmt.Errorf("spec.retention.rules[%d].tags: a Harbor rule has one tag selector, include or exclude, not both", i)
		}
		if r.KeepLatest != nil {
			n++
		}
		if r.KeepWithinDays != nil {
			n++
		}
	}
	if n > HarborMaxRetentionRules {
		return fmt.Errorf("spec.retention: the rules need %d Harbor rules (keepLatest and keepWithinDays take one each); Harbor allows %d per project", n, HarborMaxRetentionRules)
	}
	return nil
}

// HarborMaxRetentionRules is Harbor's limit of retention rules per project.
const HarborMaxRetentionRules = 15

// HarborCVEAllowlist is the project CVE allowlist for a policy's vulnerability exceptions at now:
// the IDs of the exceptions not expired (sorted, unique), and the earliest expiry among them (zero
// when none expires), so that no ID stays allowed after its own exception ends.
func HarborCVEAllowlist(spec *v1alpha1.RepositoryPolicySpec, now time.Time) (ids []string, expires time.Time) {
	if spec.Scanning == nil || spec.Scanning.Vulnerabilities == nil {
		return nil, time.Time{}
	}
	for _, e := range spec.Scanning.Vulnerabilities.Exceptions {
		if e.Expires != nil && !e.Expires.After(now) {
			continue
		}
		ids = append(ids, e.ID)
		if e.Expires != nil && (expires.IsZero() || e.Expires.Time.Before(expires)) {
			expires = e.Expires.Time
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), expires
}

// HarborClaimant is a policy as seen when deciding which one owns a Harbor project.
type HarborClaimant struct {
	Name     string
	Created  time.Time
	Projects []string
	// Holding is true for a policy that has been writing to this Harbor (its status records an
	// Enforce pass there): it keeps its projects against older policies that start claiming them.
	Holding bool
}

// FirstClaim says whether self owns its projects among others (the claimants of the same Harbor:
// policies in mode Enforce with something to write). Claimants that already hold projects come
// first, then the rest, each group in order of creation, ties broken by name: one owns its
// projects when none of them is owned by an earlier owner; one that loses a project owns nothing.
// So a project stays with the policy writing it (an older policy switched to Enforce does not take
// it over), the outcome does not depend on which policy was reconciled first, and a policy that
// lost to another never blocks a third. ok is true when self loses, with the project and the owner
// it lost to.
func FirstClaim(self HarborClaimant, others []HarborClaimant) (project, owner string, ok bool) {
	all := slices.DeleteFunc(slices.Clone(others), func(o HarborClaimant) bool { return o.Name == self.Name })
	all = append(all, self)
	slices.SortStableFunc(all, func(a, b HarborClaimant) int {
		if a.Holding != b.Holding {
			if a.Holding {
				return -1
			}
			return 1
		}
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	owners := map[string]string{}
	for _, c := range all {
		lost := false
		for _, p := range c.Projects {
			if o, taken := owners[p]; taken {
				if c.Name == self.Name {
					return p, o, true
				}
				lost = true
				break
			}
		}
		if c.Name == self.Name {
			return "", "", false
		}
		if !lost {
			for _, p := range c.Projects {
				owners[p] = c.Name
			}
		}
	}
	return "", "", false
}
