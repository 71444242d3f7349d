package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Verdict reasons: why an image fails a policy. Signature reasons come from internal/verify
// (SignatureMissing, SignatureInvalid, KeyMismatch, AttestationMissing, AttestationConditionFailed,
// ...) and are listed as they are.
const (
	// ReasonNotVerified: the policy requires signatures and no verification result exists yet.
	ReasonNotVerified = "NotVerified"
	// ReasonNotScanned: the policy has scanning thresholds and the digest has no scan.
	ReasonNotScanned = "NotScanned"
	// ReasonScanFailed: the policy has scanning thresholds and the scan of the digest failed.
	ReasonScanFailed = "ScanFailed"
	// ReasonVulnerabilityThresholdExceeded: more vulnerabilities of a severity than the policy allows.
	ReasonVulnerabilityThresholdExceeded = "VulnerabilityThresholdExceeded"
	// ReasonSecretFound: more exposed secrets than the policy allows.
	ReasonSecretFound = "SecretFound"
	// ReasonMisconfigurationFound: a misconfiguration above the policy's maxSeverity.
	ReasonMisconfigurationFound = "MisconfigurationFound"
	// ReasonNoOSDetected: the policy requires an operating system (scanning.requireOS) and the scan
	// detected none, so OS packages were not assessed.
	ReasonNoOSDetected = "NoOSDetected"
	// ReasonPolicyInvalid: the policy cannot be evaluated (its own status says why).
	ReasonPolicyInvalid = "PolicyInvalid"
)

// ScanState says whether a usable scan of the digest exists.
type ScanState int

const (
	// ScanMissing: the digest was never scanned (or scanning is off).
	ScanMissing ScanState = iota
	// ScanFailedState: the last scan failed and no earlier result exists.
	ScanFailedState
	// ScanDone: Evidence holds the findings of a scan.
	ScanDone
	// ScanNotApplicable: the digest is not a container image (a Helm chart, a WASM module, an SBOM
	// or another OCI artifact): there is nothing to scan, so scanning rules do not apply to it.
	ScanNotApplicable
)

// SignatureOutcome is a policy's verification result for the digest.
type SignatureOutcome struct {
	// Verified is true when at least `require` authorities and every attestation verified.
	Verified bool
	// Reasons lists the distinct reasons of what failed (SignatureMissing, AttestationMissing, ...).
	Reasons []string
	// VEX are the OpenVEX documents the policy's VEX authorities signed for the digest; VEXIgnored
	// the others found, with why ("<source>: <why>").
	VEX        []VEXDocument
	VEXIgnored []string
}

// Evidence is everything a verdict is computed from for one digest and one policy.
type Evidence struct {
	// Signature is the policy's verification result; nil when none exists (not run yet).
	Signature *SignatureOutcome
	// Scan says whether the findings below are a scan's.
	Scan ScanState
	// Vulnerabilities are every vulnerability the scan found (not the top 20 of the status).
	Vulnerabilities []Finding
	// Digest is the image's digest ("sha256:<hex>"), which VEX statements name.
	Digest string
	// Secrets is the count of exposed secrets.
	Secrets int
	// Misconfigurations are the severities of the failed image-config checks.
	Misconfigurations []v1alpha1.Severity
	// OSDetected is true when the scan detected an operating system (its packages were assessed).
	OSDetected bool
}

// Verdict is the outcome of one policy for one digest.
type Verdict struct {
	// Compliant is true only when every rule of the policy was checked and passed.
	Compliant bool
	// Reasons are the sorted, distinct CamelCase reasons it fails; empty when compliant.
	Reasons []string
	// Details explain the reasons and notes for people ("CRITICAL 2 > 0", "exception for
	// CVE-2021-38561 expired"), in a stable order.
	Details []string
	// VEX is what the policy's signed VEX documents did (nil when the policy applies none).
	VEX *VEXOutcome
}

// VEXOutcome is what signed VEX statements did to the findings under one policy.
type VEXOutcome struct {
	// Suppressed are the findings removed from the thresholds, in scan order.
	Suppressed []Suppression
	// Ignored lists the VEX documents not applied, with why.
	Ignored []string
}

// Evaluate computes the verdict of a policy spec for one digest at time now. A rule that needs a step
// which did not run (no verification result, no scan) fails with NotVerified or NotScanned, so an
// image never passes because a step was skipped. A policy with no verification needs no signature; a
// policy with no scanning section needs no scan (images are scanned and reported all the same).
func Evaluate(spec *v1alpha1.RepositoryPolicySpec, ev Evidence, now time.Time) Verdict {
	var v Verdict
	fail := func(reason, detail string) {
		v.Reasons = append(v.Reasons, reason)
		if detail != "" {
			v.Details = append(v.Details, detail)
		}
	}
	if spec.Verification != nil {
		switch {
		case ev.Signature == nil:
			fail(ReasonNotVerified, "signatures not verified yet")
		case !ev.Signature.Verified:
			if len(ev.Signature.Reasons) == 0 {
				fail(ReasonNotVerified, "")
			}
			for _, r := range ev.Signature.Reasons {
				fail(r, "")
			}
		}
	}
	if sc := spec.Scanning; sc != nil && (sc.Vulnerabilities != nil || sc.Secrets != nil || sc.Misconfigurations != nil || sc.RequireOS) {
		switch ev.Scan {
		case ScanMissing:
			fail(ReasonNotScanned, "no scan of the digest")
		case ScanFailedState:
			fail(ReasonScanFailed, "the scan of the digest failed")
		case ScanNotApplicable:
			v.Details = append(v.Details, "not a container image: scanning rules do not apply")
		default:
			if sc.RequireOS && !ev.OSDetected {
				fail(ReasonNoOSDetected, "no OS detected: OS packages not assessed")
			}
			evaluateScan(sc, ev, now, fail, &v)
		}
	}
	slices.Sort(v.Reasons)
	v.Reasons = slices.Compact(v.Reasons)
	v.Compliant = len(v.Reasons) == 0
	return v
}

func evaluateScan(sc *v1alpha1.ScanningSpec, ev Evidence, now time.Time, fail func(string, string), v *Verdict) {
	vulns := ev.Vulnerabilities
	if sc.VEX != nil {
		out := &VEXOutcome{}
		if ev.Signature != nil {
			var problems []string
			vulns, out.Suppressed, problems = ApplyVEX(vulns, ev.Signature.VEX, ev.Digest)
			out.Ignored = append(slices.Clone(ev.Signature.VEXIgnored), problems...)
		}
		v.VEX = out
		if n := len(out.Suppressed); n > 0 {
			v.Details = append(v.Details, fmt.Sprintf("%d findings suppressed by signed VEX", n))
		}
	}
	if sc.Vulnerabilities != nil {
		se := EvaluateVulnerabilities(sc.Vulnerabilities, vulns, now)
		if len(se.Exceeded) > 0 {
			fail(ReasonVulnerabilityThresholdExceeded, "vulnerabilities "+strings.Join(se.Exceeded, ", "))
		}
		for _, id := range se.Expired {
			v.Details = append(v.Details, "exception for "+id+" expired")
		}
	}
	if SecretsExceeded(sc.Secrets, ev.Secrets) {
		fail(ReasonSecretFound, fmt.Sprintf("%d exposed secrets", ev.Secrets))
	}
	if over := MisconfigurationsExceeded(sc.Misconfigurations, ev.Misconfigurations); len(over) > 0 {
		fail(ReasonMisconfigurationFound, fmt.Sprintf("%d misconfigurations above %s", len(over), misconfLimit(sc.Misconfigurations)))
	}
}

func misconfLimit(th *v1alpha1.MisconfigurationThreshold) v1alpha1.Severity {
	if th.MaxSeverity == "" {
		return v1alpha1.SeverityLow
	}
	return th.MaxSeverity
}
