package admission

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Reasons the webhook adds to the policies' own (SignatureMissing, VulnerabilityThresholdExceeded,
// NotScanned, ...). CamelCase and stable, like the verdict reasons.
const (
	// ReasonNotEvaluated: the inventory has no current verdict of the policy for the digest (a new
	// image, a new policy generation, or a tag not listed yet).
	ReasonNotEvaluated = "NotEvaluated"
	// ReasonTagNotResolved: the tag is in no ImageAttestation and the registry did not resolve it.
	ReasonTagNotResolved = "TagNotResolved"
	// ReasonHostNotCovered: no Registry covers the image's host and the manager refuses such images
	// (--admission-refuse-uncovered).
	ReasonHostNotCovered = "HostNotCovered"
	// ReasonInvalidReference: the image reference does not parse.
	ReasonInvalidReference = "InvalidReference"
)

// Outcome is what the webhook does with one image or one request.
type Outcome string

const (
	// Admit: every policy that governs the image passed (or none governs it).
	Admit Outcome = "Admit"
	// Warn: a policy in Audit mode failed; admitted with a warning.
	Warn Outcome = "Warn"
	// Refuse: a policy in Enforce mode failed or has no verdict yet.
	Refuse Outcome = "Refuse"
)

// Coverage is what the inventory of one Registry whose host serves the image knows about it.
type Coverage struct {
	// Registry is the Registry's namespace and name.
	Registry types.NamespacedName
	// Policies are the RepositoryPolicies of that Registry (every mode; the decision selects).
	Policies []v1alpha1.RepositoryPolicy
	// Digest is the image's digest: the reference's own, or the one its tag resolved to; "" when
	// the tag did not resolve.
	Digest string
	// ResolveError says why the tag did not resolve ("" when it did, or there was no tag).
	ResolveError string
	// Attestation is the digest's ImageAttestation, nil when the inventory has none yet.
	Attestation *v1alpha1.ImageAttestation
	// Source is the Registry itself (the cache's object: read only), for an on-demand evaluation.
	Source *v1alpha1.Registry
}

// Finding is one policy's objection to one image.
type Finding struct {
	// Policy is the RepositoryPolicy's namespace and name.
	Policy types.NamespacedName
	// Mode is the policy's mode: Enforce refuses, Audit warns.
	Mode v1alpha1.PolicyMode
	// Reasons are the verdict's reasons (or ReasonNotEvaluated, ReasonTagNotResolved).
	Reasons []string
	// Attestation is the ImageAttestation to `kubectl describe`, "" when there is none.
	Attestation string
	// Detail is a short explanation for a reason the verdict does not carry ("" otherwise).
	Detail string
}

// ImageDecision is the decision for one image reference of a Pod spec.
type ImageDecision struct {
	// Image is the reference as written.
	Image string
	// Digest is the digest that was judged ("" when unknown).
	Digest string
	// Outcome is Refuse when an Enforce policy objects, else Warn when an Audit policy does, else
	// Admit.
	Outcome Outcome
	// Findings are the objections, in policy order.
	Findings []Finding
}

// Settings are the cluster admin's choices for images no policy speaks for.
type Settings struct {
	// RefuseUncovered refuses images whose host no Registry covers (default: admitted).
	RefuseUncovered bool
}

// Decide judges one image from what the inventory knows. It is pure: the caller gathers ref (parsed)
// and cov (one entry per Registry serving ref.Host; none when no Registry covers it).
//
// A policy governs the image when it selects the repository and the tag (for a reference by tag),
// or, for a reference by digest, when it selects one of the digest's tags or the digest has none the
// inventory knows (a digest is governed by its repository's policies: never admitted silently). A
// governing policy passes only with a verdict for this digest computed for its current generation
// that is compliant; a missing or older verdict is ReasonNotEvaluated. Enforce objections refuse,
// Audit ones warn.
func Decide(ref Reference, cov []Coverage, s Settings) ImageDecision {
	d := ImageDecision{Image: ref.Image, Digest: ref.Digest, Outcome: Admit}
	if len(cov) == 0 {
		if s.RefuseUncovered {
			d.Outcome = Refuse
			d.Findings = []Finding{{Mode: v1alpha1.ModeEnforce, Reasons: []string{ReasonHostNotCovered},
				Detail: fmt.Sprintf("no Registry covers %s and the manager refuses images from uncovered hosts", ref.Host)}}
		}
		return d
	}
	for _, c := range cov {
		if c.Digest != "" {
			d.Digest = c.Digest
		}
		pols := slices.Clone(c.Policies)
		slices.SortFunc(pols, func(a, b v1alpha1.RepositoryPolicy) int { return strings.Compare(a.Name, b.Name) })
		for i := range pols {
			p := &pols[i]
			if !governs(p, ref, c.Attestation) {
				continue
			}
			if f, ok := judge(p, c); !ok {
				d.Findings = append(d.Findings, f)
			}
		}
	}
	for _, f := range d.Findings {
		switch {
		case f.Mode == v1alpha1.ModeEnforce:
			d.Outcome = Refuse
		case d.Outcome == Admit:
			d.Outcome = Warn
		}
	}
	return d
}

// governs reports whether policy p speaks for the image.
func governs(p *v1alpha1.RepositoryPolicy, ref Reference, ia *v1alpha1.ImageAttestation) bool {
	if !policy.MatchAny(p.Spec.Repositories, ref.Repository) {
		return false
	}
	if ref.Tag != "" && ref.Digest == "" {
		return policy.Selects(p.Spec.Tags, ref.Tag)
	}
	if ia == nil || len(ia.Spec.Tags) == 0 {
		return true
	}
	for _, t := range ia.Spec.Tags {
		if policy.Selects(p.Spec.Tags, t) {
			return true
		}
	}
	return false
}

// judge returns p's objection to the image of c, or ok when p passes it.
func judge(p *v1alpha1.RepositoryPolicy, c Coverage) (f Finding, ok bool) {
	f = Finding{Policy: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, Mode: modeOf(p)}
	switch {
	case c.Digest == "":
		f.Reasons = []string{ReasonTagNotResolved}
		f.Detail = "the tag is not in the inventory and the registry did not resolve it"
		if c.ResolveError != "" {
			f.Detail += ": " + c.ResolveError
		}
		return f, false
	case c.Attestation == nil:
		f.Reasons = []string{ReasonNotEvaluated}
		f.Detail = "the digest is not in the inventory yet"
		return f, false
	}
	f.Attestation = c.Attestation.Name
	for _, r := range c.Attestation.Status.Policies {
		if r.Name != p.Name {
			continue
		}
		switch {
		case r.ObservedGeneration != p.Generation:
			f.Reasons = []string{ReasonNotEvaluated}
			f.Detail = fmt.Sprintf("the verdict is for generation %d of the policy, not %d", r.ObservedGeneration, p.Generation)
			return f, false
		case !r.Compliant:
			f.Reasons = slices.Clone(r.Reasons)
			if len(f.Reasons) == 0 {
				f.Reasons = []string{"NonCompliant"}
			}
			return f, false
		}
		return f, true
	}
	f.Reasons = []string{ReasonNotEvaluated}
	f.Detail = "no verdict of the policy for this digest yet"
	return f, false
}

// modeOf is the policy's mode with the API default (Audit).
func modeOf(p *v1alpha1.RepositoryPolicy) v1alpha1.PolicyMode {
	if p.Spec.Mode == "" {
		return v1alpha1.ModeAudit
	}
	return p.Spec.Mode
}

// Response is the answer to one admission request, from its images' decisions.
type Response struct {
	// Allowed is false when any image is refused.
	Allowed bool
	// Message explains every refusal (empty when allowed), at most maxMessage bytes.
	Message string
	// Warnings carry every Audit objection (and, under a refusal, nothing else), one per image and
	// policy, each at most maxWarning bytes, at most maxWarnings of them.
	Warnings []string
}

// Limits of what is sent back to the API server (kubectl prints it all).
const (
	maxMessage  = 4096
	maxWarning  = 512
	maxWarnings = 16
)

// Summarize turns the images' decisions into the request's answer. A refusal names each refused
// image, its digest, every objecting Enforce policy with all its reasons, and the ImageAttestation
// to describe.
func Summarize(decisions []ImageDecision) Response {
	resp := Response{Allowed: true}
	var refusals []string
	for _, d := range decisions {
		for _, f := range d.Findings {
			line := describe(d, f)
			if f.Mode == v1alpha1.ModeEnforce {
				refusals = append(refusals, line)
				continue
			}
			if len(resp.Warnings) < maxWarnings {
				resp.Warnings = append(resp.Warnings, truncate(line, maxWarning))
			}
		}
		if d.Outcome == Refuse {
			resp.Allowed = false
		}
	}
	if !resp.Allowed {
		resp.Message = truncate("refused by Portcullis: "+strings.Join(refusals, "; "), maxMessage)
	}
	return resp
}

// describe renders one objection, e.g. `image "r.example/shop/api:v1" (sha256:ab…) fails
// RepositoryPolicy shop/prod (Enforce): SignatureMissing; kubectl describe imageattestation -n shop api-3f1c…`.
func describe(d ImageDecision, f Finding) string {
	var b strings.Builder
	fmt.Fprintf(&b, "image %q", d.Image)
	if d.Digest != "" {
		fmt.Fprintf(&b, " (%s)", d.Digest)
	}
	if f.Policy.Name != "" {
		fmt.Fprintf(&b, " fails RepositoryPolicy %s (%s): %s", f.Policy, f.Mode, strings.Join(f.Reasons, ", "))
	} else {
		fmt.Fprintf(&b, ": %s", strings.Join(f.Reasons, ", "))
	}
	if f.Detail != "" {
		fmt.Fprintf(&b, " (%s)", f.Detail)
	}
	if f.Attestation != "" {
		fmt.Fprintf(&b, "; kubectl describe imageattestation -n %s %s", f.Policy.Namespace, f.Attestation)
	}
	return b.String()
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// WaitFor says how long the webhook may wait for d to be judged: the longest
// spec.admission.waitForVerdict among the policies whose finding is ReasonNotEvaluated (a tag the
// registry resolved, or a digest, with no current verdict); 0 when no such policy allows waiting,
// or when some finding would stand whatever the wait (a failed verdict, a tag that did not resolve,
// an invalid reference): waiting cannot turn d into an admission then.
func WaitFor(d ImageDecision, cov []Coverage) time.Duration {
	var wait time.Duration
	for _, f := range d.Findings {
		if !slices.Equal(f.Reasons, []string{ReasonNotEvaluated}) {
			if f.Mode == v1alpha1.ModeEnforce {
				return 0
			}
			continue // an Audit objection only warns: it does not stop an admission
		}
		w := time.Duration(0)
		for _, c := range cov {
			if c.Registry.Namespace != f.Policy.Namespace {
				continue
			}
			for i := range c.Policies {
				p := &c.Policies[i]
				if p.Name == f.Policy.Name && p.Spec.Admission != nil && p.Spec.Admission.WaitForVerdict != nil {
					w = max(w, p.Spec.Admission.WaitForVerdict.Duration)
				}
			}
		}
		if w == 0 && f.Mode == v1alpha1.ModeEnforce {
			return 0 // a refusal no wait was asked for: decided now
		}
		wait = max(wait, w)
	}
	return wait
}
