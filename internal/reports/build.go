// Package reports writes Portcullis verdicts as PolicyReports, so Policy Reporter and the dashboards
// teams already run for Kyverno, Falco or kube-bench show them with no extra work: one report per
// Registry, in its namespace, with one result per (image, policy).
//
// Two formats, each behind the manager's --policy-reports flag: OpenReports Report
// (openreports.io/v1alpha1, https://openreports.io, types from github.com/openreports/reports-api)
// and the older wg-policy PolicyReport (wgpolicyk8s.io/v1alpha2), which Policy Reporter before v3
// reads; the two share their results schema. Build is pure; Reconciler is the thin controller that
// writes a report only when what it says changed.
package reports

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	openreports "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Source is the results' and reports' source (the engine that produced them).
const Source = "portcullis"

// DefaultMaxResults bounds the results of one report, so the object stays far below etcd's
// 1.5 MiB limit (a result is under 1 KiB); the summary counts every result.
const DefaultMaxResults = 1000

// OmittedAnnotation on a report says how many results were left out past its maxResults (the least
// severe: passes first).
const OmittedAnnotation = "registry.portcullis.dev/omitted-results"

// resultOrder ranks results for the bound: what needs attention first.
var resultOrder = map[string]int{policy.ResultFail: 0, policy.ResultError: 1, policy.ResultWarn: 2, policy.ResultSkip: 3, policy.ResultPass: 4}

// Build is reg's report: one result per (ImageAttestation, policy result) of ias, the policy's mode
// from policies (a policy not found counts as Audit), failures first, at most maxResults (<= 0:
// DefaultMaxResults), and how many were left out. The content depends only on the verdicts (each
// result's timestamp is the verdict's last change, status.history), so an unchanged inventory
// builds an identical report.
func Build(reg *v1alpha1.Registry, policies []v1alpha1.RepositoryPolicy, ias []v1alpha1.ImageAttestation, maxResults int) (*openreports.Report, int) {
	if maxResults <= 0 {
		maxResults = DefaultMaxResults
	}
	modes := map[string]v1alpha1.PolicyMode{}
	for _, p := range policies {
		modes[p.Name] = p.Spec.Mode
	}
	rep := &openreports.Report{
		TypeMeta:   metav1.TypeMeta{APIVersion: openreports.SchemeGroupVersion.String(), Kind: "Report"},
		ObjectMeta: metav1.ObjectMeta{Name: Name(reg.Name), Namespace: reg.Namespace},
		Source:     Source,
		Scope: &corev1.ObjectReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Registry", Namespace: reg.Namespace,
			Name: reg.Name, UID: reg.UID},
		Configuration: &openreports.ReportConfiguration{Limits: openreports.Limits{MaxResults: maxResults}},
	}
	var results []openreports.ReportResult
	for i := range ias {
		ia := &ias[i]
		if ia.Spec.RegistryRef.Name != reg.Name {
			continue
		}
		for _, p := range ia.Status.Policies {
			r := result(ia, p, modes[p.Name])
			results = append(results, r)
			switch r.Result {
			case policy.ResultPass:
				rep.Summary.Pass++
			case policy.ResultFail:
				rep.Summary.Fail++
			case policy.ResultWarn:
				rep.Summary.Warn++
			case policy.ResultError:
				rep.Summary.Error++
			default:
				rep.Summary.Skip++
			}
		}
	}
	slices.SortFunc(results, func(a, b openreports.ReportResult) int {
		return cmp.Or(cmp.Compare(resultOrder[string(a.Result)], resultOrder[string(b.Result)]),
			cmp.Compare(a.Properties["image"], b.Properties["image"]), cmp.Compare(a.Policy, b.Policy))
	})
	omitted := max(0, len(results)-maxResults)
	rep.Results = results[:len(results)-omitted]
	if omitted > 0 {
		rep.Annotations = map[string]string{OmittedAnnotation: strconv.Itoa(omitted)}
	}
	return rep, omitted
}

// Name is the report's name for the Registry name.
func Name(registry string) string {
	n := "portcullis-" + registry
	if len(n) > 253 {
		n = n[:253]
	}
	return n
}

// maxTags is how many of an image's tags a result names.
const maxTags = 5

// result is one image's result for one policy.
func result(ia *v1alpha1.ImageAttestation, p v1alpha1.PolicyResult, mode v1alpha1.PolicyMode) openreports.ReportResult {
	res := policy.ReportResult(mode, p.Compliant, p.Reasons)
	ref := ia.Spec.Repository + "@" + ia.Spec.Digest
	tags := ia.Spec.Tags[:min(len(ia.Spec.Tags), maxTags)]
	props := map[string]string{"image": ref, "repository": ia.Spec.Repository, "digest": ia.Spec.Digest}
	if len(tags) > 0 {
		props["tags"] = strings.Join(tags, ",")
	}
	if len(p.Reasons) > 0 {
		props["reasons"] = strings.Join(p.Reasons, ",")
	}
	if v := ia.Status.Vulnerabilities; v != nil {
		props["vulnerabilities"] = fmt.Sprintf("critical=%d high=%d medium=%d low=%d unknown=%d", v.Critical, v.High, v.Medium, v.Low, v.Unknown)
	}
	name := ia.Spec.Repository
	if len(tags) > 0 {
		name += ":" + tags[0]
	} else {
		name = ref
	}
	msg := name + " passes " + p.Name
	if !p.Compliant {
		msg = name + " fails " + p.Name + ": " + strings.Join(p.Reasons, ", ")
	}
	r := openreports.ReportResult{
		Source:      Source,
		Policy:      p.Name,
		Rule:        "image-verdict",
		Category:    "Container images",
		Result:      openreports.Result(res),
		Description: msg,
		Properties:  props,
		Subjects: []corev1.ObjectReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ImageAttestation",
			Namespace: ia.Namespace, Name: ia.Name, UID: ia.UID}},
	}
	if !p.Compliant && len(p.Reasons) > 0 {
		r.Rule = p.Reasons[0]
	}
	if res == policy.ResultFail || res == policy.ResultWarn {
		r.Severity = severity(ia, p)
	}
	// The time the verdict last changed, not now: an unchanged verdict builds an unchanged result.
	at := ia.CreationTimestamp
	if h := ia.Status.History; len(h) > 0 {
		at = h[len(h)-1].Time
	}
	r.Timestamp = metav1.Timestamp{Seconds: at.Unix()}
	return r
}

// severity is a failing result's severity: the highest vulnerability severity found when the
// vulnerability threshold is what failed, high for everything else (a signature, a secret).
func severity(ia *v1alpha1.ImageAttestation, p v1alpha1.PolicyResult) openreports.ResultSeverity {
	v := ia.Status.Vulnerabilities
	if !slices.Contains(p.Reasons, policy.ReasonVulnerabilityThresholdExceeded) || v == nil {
		return "high"
	}
	switch {
	case v.Critical > 0:
		return "critical"
	case v.High > 0:
		return "high"
	case v.Medium > 0:
		return "medium"
	case v.Low > 0:
		return "low"
	}
	return "info"
}
