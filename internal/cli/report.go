package cli

import (
	"cmp"
	"slices"
	"strings"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Report is a compliance report of a cluster's Registries: per Registry and policy, how many images
// pass and fail, which fail and why, since when, and which exceptions expire soon.
type Report struct {
	// Generated is when the report was made (RFC 3339 in JSON).
	Generated time.Time `json:"generated"`
	// Registries, by namespace and name.
	Registries []RegistryReport `json:"registries"`
}

// RegistryReport is one Registry's part of a Report.
type RegistryReport struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	URL       string `json:"url"`
	// Images is the count of the Registry's ImageAttestations.
	Images int `json:"images"`
	// Policies are the RepositoryPolicies of the Registry, by name.
	Policies []PolicyReport `json:"policies"`
}

// PolicyReport is one policy's verdicts over one Registry's images.
type PolicyReport struct {
	Name string `json:"name"`
	// Mode is Audit or Enforce.
	Mode      string `json:"mode"`
	Compliant int    `json:"compliant"`
	// NonCompliant counts the images that fail the policy; NonCompliantImages lists them, the
	// longest failing first.
	NonCompliant       int          `json:"nonCompliant"`
	NonCompliantImages []ImageEntry `json:"nonCompliantImages"`
	// OldestNonCompliance is when the longest failing image began failing (absent when none fails).
	OldestNonCompliance *time.Time `json:"oldestNonCompliance,omitempty"`
	// ExpiringExceptions are the policy's vulnerability exceptions that expire within 30 days of
	// Generated (or have expired in the last 30), soonest first.
	ExpiringExceptions []Exception `json:"expiringExceptions"`
	// History is the share of compliant images at each verdict change of the Registry's images
	// (from status.history), oldest first: compliance over time.
	History []Point `json:"history"`
}

// ImageEntry is one non-compliant image.
type ImageEntry struct {
	Repository string   `json:"repository"`
	Digest     string   `json:"digest"`
	Tags       []string `json:"tags"`
	Reasons    []string `json:"reasons"`
	// Since is when its current non-compliance began (status.history).
	Since time.Time `json:"since"`
}

// Exception is a vulnerability exception of a policy (spec.scanning.vulnerabilities.exceptions).
type Exception struct {
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
	Reason  string    `json:"reason"`
}

// Point is the count of compliant images among those judged, at a time.
type Point struct {
	Time      time.Time `json:"time"`
	Compliant int       `json:"compliant"`
	Judged    int       `json:"judged"`
}

// ExpiryWindow is how far ahead (and back) an exception's expiry is reported.
const ExpiryWindow = 30 * 24 * time.Hour

// BuildReport builds the report of registries from their policies and ImageAttestations at now.
// It is pure: the same inventory and now give the same report.
func BuildReport(registries []v1alpha1.Registry, policies []v1alpha1.RepositoryPolicy, ias []v1alpha1.ImageAttestation, now time.Time) Report {
	rep := Report{Generated: now.UTC(), Registries: []RegistryReport{}}
	slices.SortFunc(registries, func(a, b v1alpha1.Registry) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, reg := range registries {
		rr := RegistryReport{Namespace: reg.Namespace, Name: reg.Name, URL: reg.Spec.URL, Policies: []PolicyReport{}}
		var mine []*v1alpha1.ImageAttestation
		for i := range ias {
			if ias[i].Namespace == reg.Namespace && ias[i].Spec.RegistryRef.Name == reg.Name {
				mine = append(mine, &ias[i])
			}
		}
		rr.Images = len(mine)
		for _, p := range policies {
			if p.Namespace != reg.Namespace || p.Spec.RegistryRef.Name != reg.Name {
				continue
			}
			rr.Policies = append(rr.Policies, policyReport(&p, mine, now))
		}
		slices.SortFunc(rr.Policies, func(a, b PolicyReport) int { return cmp.Compare(a.Name, b.Name) })
		rep.Registries = append(rep.Registries, rr)
	}
	return rep
}

func policyReport(p *v1alpha1.RepositoryPolicy, ias []*v1alpha1.ImageAttestation, now time.Time) PolicyReport {
	mode := string(p.Spec.Mode)
	if mode == "" {
		mode = string(v1alpha1.ModeAudit)
	}
	pr := PolicyReport{Name: p.Name, Mode: mode, NonCompliantImages: []ImageEntry{}, ExpiringExceptions: []Exception{}, History: []Point{}}
	type change struct {
		at        time.Time
		compliant bool
		image     int
	}
	var changes []change
	for n, ia := range ias {
		i := slices.IndexFunc(ia.Status.Policies, func(r v1alpha1.PolicyResult) bool { return r.Name == p.Name })
		if i < 0 {
			continue
		}
		res := ia.Status.Policies[i]
		if res.Compliant {
			pr.Compliant++
		} else {
			pr.NonCompliant++
			since := policy.NonCompliantSince(ia)
			pr.NonCompliantImages = append(pr.NonCompliantImages, ImageEntry{Repository: ia.Spec.Repository, Digest: ia.Spec.Digest,
				Tags: append([]string{}, ia.Spec.Tags...), Reasons: append([]string{}, res.Reasons...), Since: since.UTC()})
			if pr.OldestNonCompliance == nil || since.Before(*pr.OldestNonCompliance) {
				t := since.UTC()
				pr.OldestNonCompliance = &t
			}
		}
		for _, h := range ia.Status.History {
			if h.Verdict == v1alpha1.VerdictNoPolicy {
				continue
			}
			// The history is the image's verdict over all its policies; it fails this one when a
			// reason names it ("<policy>: <Reason>").
			fails := h.Verdict == v1alpha1.VerdictNonCompliant && slices.ContainsFunc(h.Reasons, func(r string) bool { return strings.HasPrefix(r, p.Name+": ") })
			changes = append(changes, change{h.Time.UTC(), !fails, n})
		}
	}
	slices.SortStableFunc(pr.NonCompliantImages, func(a, b ImageEntry) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Digest, b.Digest))
	})
	// Compliance over time: replay every image's verdict changes in time order.
	slices.SortStableFunc(changes, func(a, b change) int { return a.at.Compare(b.at) })
	state := map[int]bool{}
	for _, c := range changes {
		state[c.image] = c.compliant
		ok := 0
		for _, v := range state {
			if v {
				ok++
			}
		}
		pt := Point{Time: c.at, Compliant: ok, Judged: len(state)}
		if n := len(pr.History); n > 0 && pr.History[n-1].Time.Equal(c.at) {
			pr.History[n-1] = pt
		} else {
			pr.History = append(pr.History, pt)
		}
	}
	if s := p.Spec.Scanning; s != nil && s.Vulnerabilities != nil {
		for _, e := range s.Vulnerabilities.Exceptions {
			if e.Expires != nil && e.Expires.Time.Sub(now).Abs() <= ExpiryWindow {
				pr.ExpiringExceptions = append(pr.ExpiringExceptions, Exception{ID: e.ID, Expires: e.Expires.UTC(), Reason: e.Reason})
			}
		}
	}
	slices.SortFunc(pr.ExpiringExceptions, func(a, b Exception) int { return cmp.Or(a.Expires.Compare(b.Expires), cmp.Compare(a.ID, b.ID)) })
	return pr
}
