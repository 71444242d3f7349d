package controller

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Metric labels are bounded: Registry (namespace/name) and policy names, severities and fixed words;
// never a repository, tag or digest.

// registryPasses is the time of each Registry's last complete listing, exposed as
// portcullis_registry_last_listing_timestamp_seconds{registry="<namespace>/<name>"}: the freshness
// signal that status.lastSyncTime (written only on change) does not give.
var registryPasses = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "portcullis_registry_last_listing_timestamp_seconds",
	Help: "Unix time of the last complete listing of each Registry.",
}, []string{"registry"})

// escapingEntries counts tar entries whose path left a layer's root; they are skipped, not scanned.
var escapingEntries = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "portcullis_scan_escaping_tar_entries_total",
	Help: "Tar entries whose path leaves the layer root, skipped by the scanner.",
})

// scans and scanSeconds count image scans by result (success, error) and time them.
var (
	scans = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_scans_total",
		Help: "Image scans by result (success, error).",
	}, []string{"result"})
	scanSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "portcullis_scan_duration_seconds",
		Help:    "Duration of image scans, layer downloads included.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14), // 50 ms .. ~7 min
	})
)

// verifications and verificationSeconds count signature verifications of a digest against one
// policy by result (verified, failed, error) and time them; results served from the cache are not
// counted.
var (
	verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_verifications_total",
		Help: "Signature verifications of a digest against one policy, by result (verified, failed, error).",
	}, []string{"result"})
	verificationSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "portcullis_verification_duration_seconds",
		Help:    "Duration of signature verifications of a digest against one policy.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 12), // 10 ms .. ~20 s
	})
)

// enforcementChanges counts the changes written to Harbor (members, robots, secrets, immutable tag
// rules, settings).
var enforcementChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "portcullis_enforcement_changes_total",
	Help: "Changes written to Harbor to make it hold what a policy owns (members, robots, robot secrets, immutable tag rules, retention policies and dry runs, settings, CVE allowlist), per Registry (namespace/name) and RepositoryPolicy.",
}, []string{"registry", "policy"})

// verdictEvents counts verdict transitions (an image turning compliant or non-compliant).
var retentionDeletions = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "portcullis_retention_deletions_total",
	Help: "Digests deleted from registries by retention, per Registry (namespace/name) and RepositoryPolicy.",
}, []string{"registry", "policy"})

var immutableTagMoves = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "portcullis_immutable_tag_moves_total",
	Help: "Tags that a RepositoryPolicy makes immutable and that moved to another digest, per Registry (namespace/name) and RepositoryPolicy.",
}, []string{"registry", "policy"})

var verdictEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "portcullis_verdict_transitions_total",
	Help: "ImageAttestations whose PolicyCompliant condition changed, by new verdict (compliant, noncompliant).",
}, []string{"verdict"})

func observeScan(start time.Time, err error) {
	scanSeconds.Observe(time.Since(start).Seconds())
	scans.WithLabelValues(resultLabel(err == nil, err, "success", "success")).Inc()
}

func observeVerification(start time.Time, verified bool, err error) {
	verificationSeconds.Observe(time.Since(start).Seconds())
	verifications.WithLabelValues(resultLabel(verified, err, "verified", "failed")).Inc()
}

func resultLabel(ok bool, err error, yes, no string) string {
	switch {
	case err != nil:
		return "error"
	case ok:
		return yes
	}
	return no
}

// verdicts reports, at each scrape, images by verdict per policy and findings by severity per
// Registry, read from the manager's cache: gauges that follow deletions without bookkeeping.
var verdicts = &verdictCollector{
	images: prometheus.NewDesc("portcullis_images",
		"ImageAttestations by policy verdict (compliant, noncompliant) per Registry (namespace/name) and RepositoryPolicy.",
		[]string{"registry", "policy", "verdict"}, nil),
	findings: prometheus.NewDesc("portcullis_image_findings",
		"Findings of the last scans summed over a Registry's images, by kind (vulnerability, secret, misconfiguration) and severity.",
		[]string{"registry", "kind", "severity"}, nil),
	since: prometheus.NewDesc("portcullis_noncompliant_since_timestamp_seconds",
		"Unix time since which the longest non-compliant image of a RepositoryPolicy has been non-compliant (from status.history), per Registry (namespace/name) and policy; absent when none fails.",
		[]string{"registry", "policy"}, nil),
}

type verdictCollector struct {
	reader                  atomic.Pointer[imageWalker]
	images, findings, since *prometheus.Desc
}

func (c *verdictCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.images
	ch <- c.findings
	ch <- c.since
}

func (c *verdictCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.reader.Load()
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type key struct{ reg, a, b string }
	images, findings := map[key]int{}, map[key]int{}
	since := map[key]time.Time{}
	// Read only, at every scrape: the cache's own objects, not a listed copy.
	_ = r.each(ctx, "", "", func(ia *v1alpha1.ImageAttestation) {
		reg := ia.Namespace + "/" + ia.Spec.RegistryRef.Name // as on the other registry metrics
		var failingSince time.Time                           // policy.NonCompliantSince, once per image
		for _, p := range ia.Status.Policies {
			verdict := "noncompliant"
			if p.Compliant {
				verdict = "compliant"
			}
			images[key{reg, p.Name, verdict}]++
			if !p.Compliant {
				if failingSince.IsZero() {
					failingSince = policy.NonCompliantSince(ia)
				}
				k := key{reg, p.Name, ""}
				if t, ok := since[k]; !ok || failingSince.Before(t) {
					since[k] = failingSince
				}
			}
		}
		if v := ia.Status.Vulnerabilities; v != nil {
			for _, c := range [...]struct {
				sev v1alpha1.Severity
				n   int32
			}{{v1alpha1.SeverityCritical, v.Critical}, {v1alpha1.SeverityHigh, v.High}, {v1alpha1.SeverityMedium, v.Medium},
				{v1alpha1.SeverityLow, v.Low}, {v1alpha1.SeverityUnknown, v.Unknown}} {
				findings[key{reg, "vulnerability", string(c.sev)}] += int(c.n)
			}
		}
		// Status keeps severities only for the top 20 secrets and misconfigurations; the rest are
		// counted under severity "UNLISTED" rather than given a severity nobody reported.
		if s := ia.Status.Secrets; s != nil {
			for _, f := range s.Top {
				findings[key{reg, "secret", string(f.Severity)}]++
			}
			findings[key{reg, "secret", "UNLISTED"}] += int(s.Count) - len(s.Top)
		}
		if m := ia.Status.Misconfigurations; m != nil {
			for _, f := range m.Top {
				findings[key{reg, "misconfiguration", string(f.Severity)}]++
			}
			findings[key{reg, "misconfiguration", "UNLISTED"}] += int(m.Count) - len(m.Top)
		}
	})
	for k, n := range images {
		ch <- prometheus.MustNewConstMetric(c.images, prometheus.GaugeValue, float64(n), k.reg, k.a, k.b)
	}
	for k, n := range findings {
		ch <- prometheus.MustNewConstMetric(c.findings, prometheus.GaugeValue, float64(n), k.reg, k.a, k.b)
	}
	for k, t := range since {
		ch <- prometheus.MustNewConstMetric(c.since, prometheus.GaugeValue, float64(t.Unix()), k.reg, k.a)
	}
}

// verdictAttestations counts verdict attestations pushed to registries (spec.verdictAttestation) by
// result: pushed or failed.
var verdictAttestations = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "portcullis_verdict_attestations_total",
	Help: "Verdict attestations pushed to registries (spec.verdictAttestation), by result: pushed or failed.",
}, []string{"result"})

// collectors are the metrics this package serves on the manager's /metrics (controller-runtime's
// registry); the README's table and config/grafana are checked against them.
var collectors = []prometheus.Collector{registryPasses, escapingEntries, scans, scanSeconds, verifications, verificationSeconds,
	verdictEvents, verdicts, retentionDeletions, immutableTagMoves, enforcementChanges, verdictAttestations}

func init() {
	ctrlmetrics.Registry.MustRegister(collectors...)
}
