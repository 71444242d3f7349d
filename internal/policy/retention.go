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
	// Created is when the image was made (the image config's "created", or the registry's push time);
	// zero when unknown.
	Created time.Time
	// Subject is the digest this one is an accessory of (an OCI referrer's subject); "" for images.
	// Cosign's tag scheme (sha256-<hex>.sig/.att/.sbom) is recognised from Tags without it.
	Subject string
}

// RetentionInput is everything the planner decides from: one repository's digests, the rules, and
// what must be protected.
type RetentionInput struct {
	Images []RetentionImage
	Rules  []v1alpha1.RetentionRule
	// InUse holds digests that running Pods use (protectInUse); nil when not protecting.
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
}

// RetentionPlan is the decision for every digest of a repository, keeps and deletes sorted by
// digest; deletions also in the order they should run (oldest first).
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

// PlanRetention decides, for every digest of one repository, whether it is kept or deleted. Rules are
// a union of what is kept: a rule selects the tags it matches (accessory tags never), takes their
// digests newest first (only those with a trusted time), and keeps the latest keepLatest and those
// created within keepWithinDays. A
// digest is kept when any rule keeps one of its tags. Beyond the rules, a digest is never deleted
// when a running Pod uses it, when its time is unknown or implausible (an age cannot be trusted), or
// when it is an accessory (signature, attestation, SBOM) of a kept or unknown subject. Accessories of
// deleted subjects are deleted with them. The plan is a pure function of its input.
func PlanRetention(in RetentionInput) RetentionPlan {
	byDigest := map[string]*RetentionImage{}
	subjectOf := map[string]string{}
	for i := range in.Images {
		img := &in.Images[i]
		byDigest[img.Digest] = img
		if img.Subject != "" {
			subjectOf[img.Digest] = img.Subject
		}
		for _, t := range img.Tags {
			if s, ok := AccessoryTag(t); ok {
				subjectOf[img.Digest] = s
			}
		}
	}

	kept := map[string]string{} // digest → which rule kept it
	for i, r := range in.Rules {
		var candidates []*RetentionImage
		for _, img := range in.Images {
			if _, acc := subjectOf[img.Digest]; acc || !trustedTime(img.Created, in.Now) {
				continue // accessories follow their subject; an untrusted time must not take a "latest" slot
			}
			matches := len(img.Tags) == 0 && r.Untagged
			for _, t := range img.Tags {
				matches = matches || Selects(r.Tags, t)
			}
			if matches {
				candidates = append(candidates, byDigest[img.Digest])
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
			case r.KeepWithinDays != nil && !img.Created.IsZero() &&
				in.Now.Sub(img.Created) <= time.Duration(*r.KeepWithinDays)*24*time.Hour:
				keepOnce(kept, img.Digest, fmt.Sprintf("rule %d: created within %d days", i+1, *r.KeepWithinDays))
			}
		}
	}

	var plan RetentionPlan
	decided := map[string]string{} // digest → action, for accessories
	decide := func(img RetentionImage) PlanItem {
		item := PlanItem{Digest: img.Digest, Tags: slices.Clone(img.Tags), Action: ActionKeep}
		switch why, ok := kept[img.Digest]; {
		case ok:
			item.Reason, item.Detail = RetainedByRule, why
		case in.InUse[img.Digest]:
			item.Reason = RetainedInUse
		case in.Protected[img.Digest] != "":
			item.Reason = in.Protected[img.Digest]
		case img.Created.IsZero():
			item.Reason = RetainedTimeUnknown
		case !trustedTime(img.Created, in.Now):
			item.Reason, item.Detail = RetainedTimeImplausible, "created "+img.Created.UTC().Format(time.RFC3339)
		default:
			item.Action, item.Reason = ActionDelete, DeleteNoRuleRetains
		}
		return item
	}
	var accessories []RetentionImage
	for _, img := range in.Images {
		if _, acc := subjectOf[img.Digest]; acc {
			accessories = append(accessories, img)
			continue
		}
		item := decide(img)
		decided[img.Digest] = item.Action
		plan.add(item)
	}
	// Accessories follow their subject, through chains (a signature of an attestation): an accessory
	// is deleted only when its subject is, and kept when the subject is kept, in use itself, or
	// unknown.
	accessoryItem := map[string]PlanItem{}
	var accessory func(d string, depth int) PlanItem
	accessory = func(d string, depth int) PlanItem {
		if item, ok := accessoryItem[d]; ok {
			return item
		}
		img, subject := byDigest[d], subjectOf[d]
		item := PlanItem{Digest: d, Tags: slices.Clone(img.Tags), Action: ActionKeep, Detail: "subject " + subject}
		subjectAction := decided[subject]
		if _, acc := subjectOf[subject]; acc && byDigest[subject] != nil && depth < 8 {
			subjectAction = accessory(subject, depth+1).Action
		}
		switch {
		case in.InUse[d]:
			item.Reason, item.Detail = RetainedInUse, ""
		case in.Protected[d] != "":
			item.Reason, item.Detail = in.Protected[d], ""
		case subjectAction == ActionDelete:
			item.Action, item.Reason = ActionDelete, DeleteSubjectDeleted
		case subjectAction == ActionKeep:
			item.Reason = RetainedSubjectKept
		default:
			item.Reason, item.Detail = RetainedSubjectUnknown, "subject "+subject+" is not in the listing"
		}
		accessoryItem[d] = item
		return item
	}
	for _, img := range accessories {
		plan.add(accessory(img.Digest, 0))
	}
	sort.Slice(plan.Keep, func(a, b int) bool { return plan.Keep[a].Digest < plan.Keep[b].Digest })
	sort.SliceStable(plan.Delete, func(a, b int) bool {
		ca, cb := byDigest[plan.Delete[a].Digest].Created, byDigest[plan.Delete[b].Digest].Created
		if !ca.Equal(cb) {
			return ca.Before(cb)
		}
		return plan.Delete[a].Digest < plan.Delete[b].Digest
	})
	return plan
}

// trustedTime reports whether a creation time can be used as an age: known, not before 2000, and not
// more than an hour ahead of now (clock skew).
func trustedTime(created, now time.Time) bool {
	return !created.IsZero() && !created.Before(implausibleBefore) && !created.After(now.Add(time.Hour))
}

func (p *RetentionPlan) add(item PlanItem) {
	if item.Action == ActionDelete {
		p.Delete = append(p.Delete, item)
	} else {
		p.Keep = append(p.Keep, item)
	}
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
