package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/store"
)

// Reasons of the VulnerabilitiesScanned condition.
const (
	scannedReason    = "Scanned"
	scanFailedReason = "ScanFailed"
)

const (
	defaultRescanInterval = 24 * time.Hour
	// scanTimeout bounds one scan, downloads included.
	scanTimeout = 15 * time.Minute
)

// scanDue reports whether the image needs a (new) scan: never scanned, scanned with an older DB, or
// scanned longer ago than the shortest rescanInterval of the selecting policies.
func scanDue(ia *v1alpha1.ImageAttestation, policies []v1alpha1.RepositoryPolicy, dbTime, now time.Time) bool {
	st := ia.Status
	c := apimeta.FindStatusCondition(st.Conditions, v1alpha1.VulnerabilitiesScannedCondition)
	if st.LastScanTime == nil || c == nil || c.Status != metav1.ConditionTrue || st.Scanner == nil {
		return true
	}
	if st.Scanner.DBUpdatedAt == nil || st.Scanner.DBUpdatedAt.Time.Before(dbTime.Truncate(time.Second)) {
		return true
	}
	if st.Scanner.OS == "" && slices.ContainsFunc(policies, requiresOS) {
		return true // scanned before the OS was recorded, and a policy's verdict depends on it
	}
	interval := defaultRescanInterval
	for _, p := range policies {
		if p.Spec.Scanning != nil && p.Spec.Scanning.RescanInterval != nil && p.Spec.Scanning.RescanInterval.Duration < interval {
			interval = p.Spec.Scanning.RescanInterval.Duration
		}
	}
	return now.Sub(st.LastScanTime.Time) >= interval
}

// noOS is ScannerInfo.OS when the scan detected no operating system.
const noOS = "none"

// osOf is ScannerInfo.OS for a scan that detected os ("" for none).
func osOf(os string) string {
	if os == "" {
		return noOS
	}
	return truncate(os, 200)
}

// osDetected reports whether the last scan detected an operating system.
func osDetected(ia *v1alpha1.ImageAttestation) bool {
	return ia.Status.Scanner != nil && ia.Status.Scanner.OS != "" && ia.Status.Scanner.OS != noOS
}

func requiresOS(p v1alpha1.RepositoryPolicy) bool {
	return p.Spec.Scanning != nil && p.Spec.Scanning.RequireOS
}

// scanRecord is what verdicts need of a scan beyond the status: every vulnerability (status keeps
// the top 20), the secret count and the misconfiguration severities.
type scanRecord struct {
	vulns   []policy.Finding
	secrets int
	misconf []v1alpha1.Severity
}

// maxScanRecords bounds the in-memory records (about 40 bytes per vulnerability). A digest whose
// record was evicted, or a manager that restarted, reads it from the durable store; without one
// (no cache dir) it rescans from trivy's on-disk layer analysis (no layer download) when a policy
// needs the findings.
const maxScanRecords = 4096

// recordKey names the scan the status describes: its digest and the DB it was matched against
// (store.Key layout).
func recordKey(ia *v1alpha1.ImageAttestation) string {
	db := ""
	if sc := ia.Status.Scanner; sc != nil && sc.DBUpdatedAt != nil {
		db = sc.DBUpdatedAt.UTC().Format(time.RFC3339)
	}
	return store.Key(ia.Spec.Digest, db)
}

// needsFindings reports whether a selecting policy has a scanning threshold (so a verdict needs the
// scan's findings).
func needsFindings(policies []v1alpha1.RepositoryPolicy) bool {
	for _, p := range policies {
		if sc := p.Spec.Scanning; sc != nil && (sc.Vulnerabilities != nil || sc.Secrets != nil || sc.Misconfigurations != nil) {
			return true
		}
	}
	return false
}

// scanImage scans the image when due and writes the summaries and VulnerabilitiesScanned; it returns
// what a verdict needs. A failed scan returns its error for a retry with backoff: when an earlier
// scan succeeded its results and condition stay (a broken registry never flips a verdict) and the
// state is ScanDone; otherwise the condition says ScanFailed and the state is ScanFailedState.
func (r *ImageAttestationReconciler) scanImage(ctx context.Context, ia *v1alpha1.ImageAttestation, reg *v1alpha1.Registry,
	rc *registry.Client, policies []v1alpha1.RepositoryPolicy) (*scanRecord, policy.ScanState, error) {
	cond := metav1.Condition{Type: v1alpha1.VulnerabilitiesScannedCondition, ObservedGeneration: ia.Generation}
	if r.Scanner == nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, v1alpha1.NotScannedReason, "scanning is off: the manager runs without --vulndb-dir"
		apimeta.SetStatusCondition(&ia.Status.Conditions, cond)
		return nil, policy.ScanMissing, nil
	}
	if c := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.VulnerabilitiesScannedCondition); c != nil && c.Reason == notApplicableReason {
		return nil, policy.ScanNotApplicable, nil // a digest never changes: nothing to scan, ever
	}
	now := time.Now()
	rec := r.records.get(recordKey(ia))
	due := scanDue(ia, policies, r.Scanner.DBUpdatedAt(), now)
	if !due && (rec != nil || !needsFindings(policies)) {
		if rec == nil {
			rec = &scanRecord{}
		}
		return rec, policy.ScanDone, nil
	}
	scannedBefore := hasConditionStatus(ia, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionTrue)
	lastScan := ia.Status.LastScanTime
	kind, platforms := artifactKind(ctx, rc, ia)
	if kind != "" {
		// A Helm chart, WASM module, SBOM or other OCI artifact: not a scan failure to retry.
		cond.Status, cond.Reason = metav1.ConditionFalse, notApplicableReason
		cond.Message = truncate(fmt.Sprintf("not a container image (%s): nothing to scan; scanning rules do not apply", kind), 1000)
		apimeta.SetStatusCondition(&ia.Status.Conditions, cond)
		ia.Status.LastScanTime = &metav1.Time{Time: now}
		return nil, policy.ScanNotApplicable, nil
	}
	res, perPlatform, err := r.scanPlatforms(ctx, ia, reg, rc, platforms)
	if err != nil {
		if scannedBefore { // the earlier scan's findings still stand (nil when no longer in memory)
			return rec, policy.ScanDone, err
		}
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, scanFailedReason, truncate(err.Error(), 1000)
		apimeta.SetStatusCondition(&ia.Status.Conditions, cond)
		return nil, policy.ScanFailedState, err
	}
	if r.Options.TrivyOperatorReports {
		if err := r.exportReports(ctx, ia, reg, res); err != nil {
			return nil, policy.ScanDone, err
		}
	}
	ia.Status.Vulnerabilities = vulnerabilitySummary(res.Vulnerabilities)
	ia.Status.Secrets = secretSummary(res.Secrets)
	ia.Status.Misconfigurations = misconfigurationSummary(res.Misconfigurations)
	ia.Status.Platforms = perPlatform
	ia.Status.Scanner = &v1alpha1.ScannerInfo{Name: "trivy", Version: truncate(strings.TrimPrefix(res.Scanner, "trivy "), 256), OS: osOf(res.OS)}
	if !res.DBUpdatedAt.IsZero() {
		ia.Status.Scanner.DBUpdatedAt = &metav1.Time{Time: res.DBUpdatedAt.Truncate(time.Second)}
	}
	ia.Status.LastScanTime = &metav1.Time{Time: now}
	if !due && lastScan != nil {
		// Only the in-memory findings were missing (a restart, an eviction): the same digest and DB
		// give the same results, so the status keeps its scan time and is not rewritten.
		ia.Status.LastScanTime = lastScan
	}
	v := ia.Status.Vulnerabilities
	cond.Status, cond.Reason = metav1.ConditionTrue, scannedReason
	cond.Message = fmt.Sprintf("%d critical, %d high, %d medium, %d low, %d unknown (%d fixable); %d secrets; %d misconfigurations",
		v.Critical, v.High, v.Medium, v.Low, v.Unknown, v.Fixable, ia.Status.Secrets.Count, ia.Status.Misconfigurations.Count)
	if len(perPlatform) > 0 {
		cond.Message += fmt.Sprintf("; merged from %d platforms (%s)", len(platforms), platformNames(platforms))
	}
	if res.OS == "" {
		cond.Message += "; no OS detected: OS packages not assessed"
	}
	cond.Message += escapingNote(res.EscapingEntries, apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.VulnerabilitiesScannedCondition))
	apimeta.SetStatusCondition(&ia.Status.Conditions, cond)
	rec = newScanRecord(res)
	r.records.put(ctx, recordKey(ia), rec)
	return rec, policy.ScanDone, nil
}

// maxPlatformScans bounds the per-platform entries of the status (the API's MaxItems); every
// platform is scanned and merged all the same.
const maxPlatformScans = 32

// scanPlatforms scans the digest, or when it is an index each of its platform images (platforms,
// from artifactKind), one after the other, and merges their results (scan.Merge). Any platform's
// failure fails the scan: a partial result would read as a clean one.
func (r *ImageAttestationReconciler) scanPlatforms(ctx context.Context, ia *v1alpha1.ImageAttestation, reg *v1alpha1.Registry,
	rc *registry.Client, platforms []scan.Platform) (scan.Result, []v1alpha1.PlatformScan, error) {
	if len(platforms) == 0 {
		res, err := r.scan(ctx, ia, reg, rc, ia.Spec.Digest)
		return res, nil, err
	}
	var results []scan.Result
	var status []v1alpha1.PlatformScan
	for _, p := range platforms {
		res, err := r.scan(ctx, ia, reg, rc, p.Digest)
		if err != nil {
			return scan.Result{}, nil, fmt.Errorf("platform %s (%s): %w", p.Platform, p.Digest, err)
		}
		results = append(results, res)
		if len(status) < maxPlatformScans {
			c := severityCounts(res.Vulnerabilities, func(v scan.Vulnerability) string { return v.Severity })
			status = append(status, v1alpha1.PlatformScan{Platform: truncate(p.Platform, 128), Digest: truncate(p.Digest, 256), OS: osOf(res.OS),
				Critical: c[v1alpha1.SeverityCritical], High: c[v1alpha1.SeverityHigh], Medium: c[v1alpha1.SeverityMedium],
				Low: c[v1alpha1.SeverityLow], Unknown: c[v1alpha1.SeverityUnknown],
				Secrets: int32(len(res.Secrets)), Misconfigurations: int32(len(res.Misconfigurations))})
		}
	}
	return scan.Merge(results), status, nil
}

func platformNames(ps []scan.Platform) string {
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		names = append(names, p.Platform)
	}
	return truncate(strings.Join(names, ", "), 300)
}

// scan runs one bounded scan of digest (the ImageAttestation's, or one platform image of it) in the
// image's repository with the Registry's credentials.
func (r *ImageAttestationReconciler) scan(ctx context.Context, ia *v1alpha1.ImageAttestation, reg *v1alpha1.Registry,
	rc *registry.Client, digest string) (scan.Result, error) {
	indexRef, err := digestRef(reg, ia)
	if err != nil {
		return scan.Result{}, err
	}
	ref := indexRef.Context().Digest(digest)
	// A digest scanned before passed the size limit then (digests are immutable).
	sizeChecked := ia.Status.LastScanTime != nil && ia.Status.Scanner != nil
	// Layer analyses are shared within the namespace only (tenant isolation of the scan cache).
	target, access := ref.String(), scan.Access{SizeChecked: sizeChecked, Tenant: reg.Namespace}
	if relay := r.access.relay; relay != nil {
		// Through the Registry's client: its rate limit, counters, credentials and CA; the scanner
		// gets no credential.
		target = relay.Reference(client.ObjectKeyFromObject(reg).String(), rc, ia.Spec.Repository, digest)
		access.Insecure = true
	} else {
		user, pass, insecure, err := rc.Credentials()
		if err != nil {
			return scan.Result{}, fmt.Errorf("registry credentials: %w", err)
		}
		access.Username, access.Password, access.Insecure = user, pass, insecure
	}
	// A bounded scan: a stuck layer download must not hold the DB lock (and a reload) forever.
	scanCtx, cancel := context.WithTimeout(ctx, scanTimeout)
	defer cancel()
	if r.scanSlots != nil {
		select {
		case r.scanSlots <- struct{}{}:
			defer func() { <-r.scanSlots }()
		case <-scanCtx.Done():
			return scan.Result{}, fmt.Errorf("waiting for a scan slot: %w", scanCtx.Err())
		}
	}
	start := time.Now()
	res, err := r.Scanner.Scan(scanCtx, target, access)
	observeScan(start, err)
	if err != nil && target != ref.String() {
		err = errors.New(strings.ReplaceAll(err.Error(), target, ref.String())) // name the image, not the relay
	}
	return res, err
}

func newScanRecord(res scan.Result) *scanRecord {
	rec := &scanRecord{secrets: len(res.Secrets)}
	for _, v := range res.Vulnerabilities {
		rec.vulns = append(rec.vulns, policy.Finding{ID: v.ID, Severity: severity(v.Severity), Fixable: v.FixedVersion != "", Package: v.Package})
	}
	for _, m := range res.Misconfigurations {
		rec.misconf = append(rec.misconf, severity(m.Severity))
	}
	return rec
}

const escapingMarker = " tar entries outside a layer's root were skipped"

// escapingNote says how many tar entries escaping a layer's root the scan skipped. A rescan served
// from the analysis cache reads no layer (n = -1): the note of the scan that read them is kept.
func escapingNote(n int, previous *metav1.Condition) string {
	switch {
	case n > 0:
		escapingEntries.Add(float64(n))
		return fmt.Sprintf("; %d%s", n, escapingMarker)
	case n < 0 && previous != nil && strings.Contains(previous.Message, escapingMarker):
		i := strings.LastIndex(previous.Message, "; ")
		return previous.Message[i:]
	}
	return ""
}

var severityOrder = map[string]int{"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2, "LOW": 3, "UNKNOWN": 4}

// severityCounts counts items by severity as trivy reports it; anything unrecognised is UNKNOWN.
func severityCounts[T any](items []T, sev func(T) string) map[v1alpha1.Severity]int32 {
	c := map[v1alpha1.Severity]int32{}
	for _, it := range items {
		c[severity(sev(it))]++
	}
	return c
}

func severity(s string) v1alpha1.Severity {
	if _, ok := severityOrder[s]; ok {
		return v1alpha1.Severity(s)
	}
	return v1alpha1.SeverityUnknown
}

// vulnerabilitySummary counts findings by severity and keeps the 20 most severe (then by ID), so
// the object's size never grows with the number of findings.
func vulnerabilitySummary(vs []scan.Vulnerability) *v1alpha1.VulnerabilitySummary {
	c := severityCounts(vs, func(v scan.Vulnerability) string { return v.Severity })
	s := &v1alpha1.VulnerabilitySummary{Critical: c[v1alpha1.SeverityCritical], High: c[v1alpha1.SeverityHigh],
		Medium: c[v1alpha1.SeverityMedium], Low: c[v1alpha1.SeverityLow], Unknown: c[v1alpha1.SeverityUnknown]}
	for _, v := range vs {
		if v.FixedVersion != "" {
			s.Fixable++
		}
	}
	sorted := append([]scan.Vulnerability(nil), vs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := severityOrder[string(severity(sorted[i].Severity))], severityOrder[string(severity(sorted[j].Severity))]
		if a != b {
			return a < b
		}
		return sorted[i].ID+sorted[i].Package < sorted[j].ID+sorted[j].Package
	})
	for _, v := range sorted[:min(len(sorted), v1alpha1.MaxTopFindings)] {
		s.Top = append(s.Top, v1alpha1.VulnerabilityFinding{ID: truncate(v.ID, 256), Package: truncate(v.Package, 256),
			InstalledVersion: truncate(v.InstalledVersion, 256), FixedVersion: truncate(v.FixedVersion, 256),
			Severity: severity(v.Severity), Title: truncate(v.Title, 250)})
	}
	return s
}

func secretSummary(ss []scan.Secret) *v1alpha1.SecretSummary {
	s := &v1alpha1.SecretSummary{Count: int32(len(ss))}
	for _, f := range ss[:min(len(ss), v1alpha1.MaxTopFindings)] {
		s.Top = append(s.Top, v1alpha1.SecretFinding{RuleID: truncate(f.RuleID, 256), Severity: severity(f.Severity), Path: truncate(f.Path, 1000), Line: int32(f.Line)})
	}
	return s
}

func misconfigurationSummary(ms []scan.Misconfiguration) *v1alpha1.MisconfigurationSummary {
	s := &v1alpha1.MisconfigurationSummary{Count: int32(len(ms))}
	sorted := append([]scan.Misconfiguration(nil), ms...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return severityOrder[string(severity(sorted[i].Severity))] < severityOrder[string(severity(sorted[j].Severity))]
	})
	for _, m := range sorted[:min(len(sorted), v1alpha1.MaxTopFindings)] {
		s.Top = append(s.Top, v1alpha1.MisconfigurationFinding{ID: truncate(m.ID, 256), Severity: severity(m.Severity), Title: truncate(m.Title, 250)})
	}
	return s
}
