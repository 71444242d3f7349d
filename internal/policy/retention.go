package policy

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Retention actions of a PlanItem.
const (
	// ActionKeep: the digest stays.
	ActionKeep = "Keep"
	// ActionDelete: the digest (its manifest, and so every tag on it) is deleted.
	ActionDelete = "Delete"
)

// Retention reasons: why a digest is kept or deleted.
const (
	// RetainedByRule: a rule keeps one of the digest's tags (or, with untagged, the digest).
	RetainedByRule = "RetainedByRule"
	// RetainedInUse: a running Pod uses the digest (protectInUse).
	RetainedInUse = "InUse"
	// RetainedTimeUnknown: the digest's creation time is unknown, so no age rule can be applied safely.
	RetainedTimeUnknown = "TimeUnknown"
	// RetainedTimeImplausible: the creation time is in the future or before 2000 (e.g. the epoch of a
	// reproducible build), so it says nothing about age.
	RetainedTimeImplausible = "TimeImplausible"
	// RetainedSubjectKept: a signature, attestation or SBOM whose subject is kept.
	RetainedSubjectKept = "SubjectKept"
	// RetainedSubjectUnknown: a signature, attestation or SBOM whose subject is not in the listing.
	RetainedSubjectUnknown = "SubjectUnknown"
	// RetainedOutsidePolicy: the digest has a tag the policy does not govern (spec.tags).
	RetainedOutsidePolicy = "OutsidePolicy"
	// RetainedByOtherPolicy: another RepositoryPolicy governing the repository keeps the digest.
	RetainedByOtherPolicy = "KeptByOtherPolicy"
	// RetainedChildOfKept: a platform manifest of a kept index.
	RetainedChildOfKept = "ChildOfKeptIndex"
	// DeleteNoRuleRetains: no rule keeps any of the digest's tags, and nothing protects it.
	DeleteNoRuleRetains = "NoRuleRetains"
	// DeleteSubjectDeleted: a signature, attestation or SBOM whose subject is deleted in the same plan.
	DeleteSubjectDeleted = "SubjectDeleted"
)

// implausibleBefore is the earliest creation time taken as real; reproducible builds stamp the epoch.
var implausibleBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// RetentionImage is one digest of a repository as the planner sees it.
type RetentionImage struct {
	// Digest is the manifest or index digest, e.g. "sha256:...".
	Digest string
	// Tags are the tags pointing at Digest (accessory tags such as cosign's "sha256-<hex>.sig"
	// included; the planner recognises them).
	Tags []string
	// Created is when the image was built (the image config's "created"; an index: its newest
	// platform image); zero when unknown. Ages are build times, not push times.
	Created time.Time
	// Subject is the digest this one is an OCI referrer of; "" for images. Cosign's tag scheme
	// (sha256-<hex>.sig/.att/.sbom, and the referrers fallback tag) is recognised from Tags too; a
	// digest may have several subjects.
	Subject string
	// Children are the platform manifests of an index: kept whenever the index is kept.
	Children []string
}

// RetentionInput is everything the planner decides from: one repository's digests, the rules, and
// what must be protected.
type RetentionInput struct {
	Images []RetentionImage
	Rules  []v1alpha1.RetentionRule
	// TagFilter is the policy's spec.tags: a rule only selects digests through tags the policy governs.
	TagFilter v1alpha1.PatternSelector
	// InUse holds digests that Pods use (protectInUse); nil when not protecting.
	InUse map[string]bool
	// Protected holds digests kept whatever the rules say, with the reason (e.g.
	// RetainedOutsidePolicy).
	Protected map[string]string
	// Now is the time age rules are measured from.
	Now time.Time
}

// PlanItem is the decision for one digest.
type PlanItem struct {
	Digest string
	Tags   []string
	Action string
	// Reason is one of the Retained*/Delete* constants.
	Reason string
	// Detail says which rule kept it, or other specifics, for people.
	Detail string
	// Subjects are the digests this one is an accessory of (deleted before it).
	Subjects []string
}

// RetentionPlan is the decision for every digest of a repository: keeps sorted by digest, deletions
// in the order they must run: each image (oldest first) followed by its accessories, so a signature
// never goes before the image it signs.
type RetentionPlan struct {
	Keep   []PlanItem
	Delete []PlanItem
}

// cosignAccessory matches cosign's tag scheme for signatures, attestations and SBOMs attached to a
// digest (https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md), and the OCI 1.1
// referrers fallback tag, the bare `sha256-<hex>` (distribution spec, "Referrers Tag Schema").
var cosignAccessory = regexp.MustCompile(`^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})(\.(sig|att|sbom))?$`)

// AccessoryTag reports whether tag is a cosign signature, attestation or SBOM tag, or a referrers
// fallback tag, and the subject digest it names.
func AccessoryTag(tag string) (subject string, ok bool) {
	m := cosignAccessory.FindStringSubmatch(tag)
	if m == nil {
		return "", false
	}
	return m[1] + ":" + m[2], true
}

// PlanRetention decides, for every digest of one repository, whether it is kept or deleted.
//
// Rules are a union of what is kept: a rule selects the digests with a tag that both the rule and
// TagFilter select (accessory tags never; untagged digests with untagged), with a trusted time and
// not otherwise protected, newest first, and keeps the latest keepLatest and those created within
// keepWithinDays. A digest is kept when any rule keeps it. Beyond the rules a digest is kept when a
// Pod uses it, when it is Protected, when its time is unknown or implausible (an age cannot be
// trusted), when it is a platform manifest of a kept index, and when it is an accessory (signature,
// attestation, SBOM, referrer) of any subject that is kept or not in the listing. An accessory is
// deleted only with all its subjects. The plan is a pure function of its input.
func PlanRetention(in RetentionInput) RetentionPlan {
	byDigest := map[string]*RetentionImage{}
	subjects := map[string][]string{}
	ordinary := map[string][]string{} // non-accessory tags
	for i := range in.Images {
		img := &in.Images[i]
		byDigest[img.Digest] = img
		if img.Subject != "" {
			subjects[img.Digest] = append(subjects[img.Digest], img.Subject)
		}
		for _, t := range img.Tags {
			if s, ok := AccessoryTag(t); ok {
				if !slices.Contains(subjects[img.Digest], s) {
					subjects[img.Digest] = append(subjects[img.Digest], s)
				}
			} else {
				ordinary[img.Digest] = append(ordinary[img.Digest], t)
			}
		}
	}
	accessoryOnly := func(d string) bool { return len(ordinary[d]) == 0 && len(subjects[d]) > 0 }

	kept := map[string]string{} // digest → which rule kept it
	for i, r := range in.Rules {
		var candidates []*RetentionImage
		for _, img := range in.Images {
			d := img.Digest
			if accessoryOnly(d) || !trustedTime(img.Created, in.Now) || in.Protected[d] != "" {
				continue // accessories follow their subject; untrusted and protected digests are kept anyway
			}
			matches := len(img.Tags) == 0 && r.Untagged
			for _, t := range ordinary[d] {
				matches = matches || (Selects(in.TagFilter, t) && Selects(r.Tags, t))
			}
			if matches {
				candidates = append(candidates, byDigest[d])
			}
		}
		// Newest first; ties by digest for determinism.
		sort.SliceStable(candidates, func(a, b int) bool {
			ca, cb := candidates[a].Created, candidates[b].Created
			if !ca.Equal(cb) {
				return ca.After(cb)
			}
			return candidates[a].Digest < candidates[b].Digest
		})
		for n, img := range candidates {
			switch {
			case r.KeepLatest != nil && n < int(*r.KeepLatest):
				keepOnce(kept, img.Digest, fmt.Sprintf("rule %d: among the %d latest", i+1, *r.KeepLatest))
			case r.KeepWithinDays != nil && in.Now.Sub(img.Created) <= time.Duration(*r.KeepWithinDays)*24*time.Hour:
				keepOnce(kept, img.Digest, fmt.Sprintf("rule %d: created within %d days", i+1, *r.KeepWithinDays))
			}
		}
	}

	// First decisions, from the digest alone.
	items := map[string]*PlanItem{}
	for _, img := range in.Images {
		d := img.Digest
		item := &PlanItem{Digest: d, Tags: slices.Clone(img.Tags), Action: ActionKeep, Subjects: subjects[d]}
		switch why, ok := kept[d]; {
		case ok:
			item.Reason, item.Detail = RetainedByRule, why
		case in.InUse[d]:
			item.Reason = RetainedInUse
		case in.Protected[d] != "":
			item.Reason = in.Protected[d]
		case accessoryOnly(d):
			item.Action, item.Reason = ActionDelete, DeleteSubjectDeleted // unless a subject stays (below)
		case img.Created.IsZero():
			item.Reason = RetainedTimeUnknown
		case !trustedTime(img.Created, in.Now):
			item.Reason, item.Detail = RetainedTimeImplausible, "created "+img.Created.UTC().Format(time.RFC3339)
		default:
			item.Action, item.Reason = ActionDelete, DeleteNoRuleRetains
		}
		items[d] = item
	}
	// Then what other digests need, to a fixpoint (decisions only ever turn from Delete to Keep):
	// the platform manifests of a kept index, and accessories of a subject that stays.
	for changed := true; changed; {
		changed = false
		for _, img := range in.Images {
			if items[img.Digest].Action != ActionKeep {
				continue
			}
			for _, c := range img.Children {
				if it := items[c]; it != nil && it.Action == ActionDelete {
					it.Action, it.Reason, it.Detail = ActionKeep, RetainedChildOfKept, "platform manifest of "+img.Digest
					changed = true
				}
			}
		}
		for _, img := range in.Images {
			it := items[img.Digest]
			if it.Action != ActionDelete {
				continue
			}
			for _, s := range subjects[img.Digest] {
				switch subj := items[s]; {
				case subj == nil:
					it.Action, it.Reason, it.Detail = ActionKeep, RetainedSubjectUnknown, "subject "+s+" is not in the listing"
				case subj.Action == ActionKeep:
					it.Action, it.Reason, it.Detail = ActionKeep, RetainedSubjectKept, "subject "+s
				default:
					continue
				}
				changed = true
				break
			}
		}
	}

	var plan RetentionPlan
	var roots []*PlanItem
	for _, img := range in.Images {
		it := items[img.Digest]
		switch {
		case it.Action == ActionKeep:
			plan.Keep = append(plan.Keep, *it)
		case len(subjects[img.Digest]) == 0:
			roots = append(roots, it)
		}
	}
	sort.Slice(plan.Keep, func(a, b int) bool { return plan.Keep[a].Digest < plan.Keep[b].Digest })
	sort.SliceStable(roots, func(a, b int) bool {
		ca, cb := byDigest[roots[a].Digest].Created, byDigest[roots[b].Digest].Created
		if !ca.Equal(cb) {
			return ca.Before(cb)
		}
		return roots[a].Digest < roots[b].Digest
	})
	// Each image, then the accessories all of whose subjects are already placed (depth first).
	placed := map[string]bool{}
	var place func(it *PlanItem)
	place = func(it *PlanItem) {
		placed[it.Digest] = true
		plan.Delete = append(plan.Delete, *it)
		for _, img := range in.Images {
			acc := items[img.Digest]
			if acc.Action != ActionDelete || placed[acc.Digest] || !slices.Contains(acc.Subjects, it.Digest) {
				continue
			}
			if !slices.ContainsFunc(acc.Subjects, func(s string) bool { return !placed[s] }) {
				place(acc)
			}
		}
	}
	for _, r := range roots {
		place(r)
	}
	// Accessories that only reach each other (a cycle) have no image to go with: keep them.
	for _, img := range in.Images {
		if it := items[img.Digest]; it.Action == ActionDelete && !placed[it.Digest] {
			it.Action, it.Reason, it.Detail = ActionKeep, RetainedSubjectUnknown, "its subjects only lead back to accessories"
			plan.Keep = append(plan.Keep, *it)
		}
	}
	sort.Slice(plan.Keep, func(a, b int) bool { return plan.Keep[a].Digest < plan.Keep[b].Digest })
	return plan
}

// Units splits deletions into units: an image with the accessories placed after it. A pass with a
// deletion budget starts a unit only when the whole unit fits, so signatures are never left behind
// alone, and never deleted before their image.
func (p RetentionPlan) Units() [][]PlanItem {
	var units [][]PlanItem
	for _, it := range p.Delete {
		if len(it.Subjects) == 0 || len(units) == 0 {
			units = append(units, []PlanItem{it})
		} else {
			units[len(units)-1] = append(units[len(units)-1], it)
		}
	}
	return units
}

// trustedTime reports whether a creation time can be used as an age: known, not before 2000, and not
// more than an hour ahead of now (clock skew).
func trustedTime(created, now time.Time) bool {
	return !created.IsZero() && !created.Before(implausibleBefore) && !created.After(now.Add(time.Hour))
}

func keepOnce(kept map[string]string, digest, why string) {
	if _, ok := kept[digest]; !ok {
		kept[digest] = why
	}
}

// String is a one-line summary, e.g. "keep 12, delete 3".
func (p RetentionPlan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keep %d, delete %d", len(p.Keep), len(p.Delete))
	return b.String()
}
