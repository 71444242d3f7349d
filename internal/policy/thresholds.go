package policy

import (
	"fmt"
	"sort"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Finding is a vulnerability as the policy sees it: trivy's severity (UNKNOWN when the source gives
// none) and whether a fixed version exists.
type Finding struct {
	ID       string
	Severity v1alpha1.Severity
	Fixable  bool
	// Package is the name of the package it was found in (VEX statements name packages).
	Package string
}

// Counts are vulnerabilities per severity after ignoreUnfixed, unknownSeverityAs and exceptions.
type Counts map[v1alpha1.Severity]int32

// ScanEvaluation is the outcome of a policy's vulnerability thresholds for one scan.
type ScanEvaluation struct {
	// Counts per severity that the thresholds were applied to.
	Counts Counts
	// Exceeded lists "SEVERITY count > max" for every maximum passed; empty when the image passes.
	Exceeded []string
	// Excepted are the IDs an unexpired exception removed; Expired the IDs whose exception has
	// expired and so counted again (the status says so).
	Excepted, Expired []string
}

// EvaluateVulnerabilities applies a policy's thresholds (nil: no limit) to findings at time now.
// Rules: an exception applies to its ID until `expires` (exclusive) and never after; ignoreUnfixed
// drops findings without a fixed version; an UNKNOWN severity counts as unknownSeverityAs (default
// UNKNOWN, never invented); each maxX compares with the count of that severity.
func EvaluateVulnerabilities(th *v1alpha1.VulnerabilityThresholds, findings []Finding, now time.Time) ScanEvaluation {
	ev := ScanEvaluation{Counts: Counts{}}
	exceptions := map[string]*v1alpha1.VulnerabilityException{}
	unknownAs := v1alpha1.SeverityUnknown
	if th != nil {
		for i := range th.Exceptions {
			exceptions[th.Exceptions[i].ID] = &th.Exceptions[i]
		}
		if th.UnknownSeverityAs != "" {
			unknownAs = th.UnknownSeverityAs
		}
	}
	excepted, expired := map[string]bool{}, map[string]bool{}
	for _, f := range findings {
		if e := exceptions[f.ID]; e != nil {
			if e.Expires == nil || now.Before(e.Expires.Time) {
				excepted[f.ID] = true
				continue
			}
			expired[f.ID] = true
		}
		if th != nil && th.IgnoreUnfixed && !f.Fixable {
			continue
		}
		sev := f.Severity
		if sev == "" || sev == v1alpha1.SeverityUnknown {
			sev = unknownAs
		}
		ev.Counts[sev]++
	}
	ev.Excepted, ev.Expired = sortedKeys(excepted), sortedKeys(expired)
	if th == nil {
		return ev
	}
	for _, m := range []struct {
		sev v1alpha1.Severity
		max *int32
	}{
		{v1alpha1.SeverityCritical, th.MaxCritical}, {v1alpha1.SeverityHigh, th.MaxHigh}, {v1alpha1.SeverityMedium, th.MaxMedium},
		{v1alpha1.SeverityLow, th.MaxLow}, {v1alpha1.SeverityUnknown, th.MaxUnknown},
	} {
		if m.max != nil && ev.Counts[m.sev] > *m.max {
			ev.Exceeded = append(ev.Exceeded, fmt.Sprintf("%s %d > %d", m.sev, ev.Counts[m.sev], *m.max))
		}
	}
	return ev
}

// SecretsExceeded reports whether count exposed secrets pass the policy's maximum (default 0 when a
// secrets section exists; no limit without one).
func SecretsExceeded(th *v1alpha1.SecretThreshold, count int) bool {
	if th == nil {
		return false
	}
	limit := int32(0)
	if th.Maximum != nil {
		limit = *th.Maximum
	}
	return int32(count) > limit
}

// severityRank orders severities, UNKNOWN lowest.
var severityRank = map[v1alpha1.Severity]int{
	v1alpha1.SeverityUnknown: 0, v1alpha1.SeverityLow: 1, v1alpha1.SeverityMedium: 2, v1alpha1.SeverityHigh: 3, v1alpha1.SeverityCritical: 4,
}

// MisconfigurationsExceeded returns the severities of findings above the policy's maxSeverity
// (default LOW when a misconfigurations section exists; no limit without one).
func MisconfigurationsExceeded(th *v1alpha1.MisconfigurationThreshold, severities []v1alpha1.Severity) []v1alpha1.Severity {
	if th == nil {
		return nil
	}
	limit := th.MaxSeverity
	if limit == "" {
		limit = v1alpha1.SeverityLow
	}
	var over []v1alpha1.Severity
	for _, s := range severities {
		if severityRank[s] > severityRank[limit] {
			over = append(over, s)
		}
	}
	return over
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
