package policy

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func i32(v int32) *int32 { return &v }

func TestEvaluateVulnerabilities(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	findings := []Finding{
		{ID: "CVE-1", Severity: v1alpha1.SeverityCritical, Fixable: true},
		{ID: "CVE-2", Severity: v1alpha1.SeverityHigh, Fixable: false},
		{ID: "CVE-3", Severity: v1alpha1.SeverityUnknown, Fixable: true},
		{ID: "GO-4", Severity: "", Fixable: true},
		{ID: "CVE-5", Severity: v1alpha1.SeverityHigh, Fixable: true},
	}
	cases := []struct {
		name     string
		th       *v1alpha1.VulnerabilityThresholds
		counts   string // CRITICAL/HIGH/UNKNOWN
		exceeded string
		excepted string
		expired  string
	}{
		{"no thresholds", nil, "1/2/2", "", "", ""},
		{"max critical 0", &v1alpha1.VulnerabilityThresholds{MaxCritical: i32(0)}, "1/2/2", "CRITICAL 1 > 0", "", ""},
		{"ignore unfixed", &v1alpha1.VulnerabilityThresholds{MaxHigh: i32(0), IgnoreUnfixed: true}, "1/1/2", "HIGH 1 > 0", "", ""},
		{"unknown counted as high", &v1alpha1.VulnerabilityThresholds{MaxHigh: i32(3), UnknownSeverityAs: v1alpha1.SeverityHigh}, "1/4/0", "HIGH 4 > 3", "", ""},
		{"live exception", &v1alpha1.VulnerabilityThresholds{MaxCritical: i32(0), Exceptions: []v1alpha1.VulnerabilityException{
			{ID: "CVE-1", Reason: "not reachable", Expires: &metav1.Time{Time: now.Add(time.Hour)}}}}, "0/2/2", "", "CVE-1", ""},
		{"exception without expiry", &v1alpha1.VulnerabilityThresholds{MaxCritical: i32(0), Exceptions: []v1alpha1.VulnerabilityException{
			{ID: "CVE-1", Reason: "accepted"}}}, "0/2/2", "", "CVE-1", ""},
		{"expired exception counts again", &v1alpha1.VulnerabilityThresholds{MaxCritical: i32(0), Exceptions: []v1alpha1.VulnerabilityException{
			{ID: "CVE-1", Reason: "was accepted", Expires: &metav1.Time{Time: now}}}}, "1/2/2", "CRITICAL 1 > 0", "", "CVE-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := EvaluateVulnerabilities(tc.th, findings, now)
			got := strings.Join([]string{itoa(ev.Counts[v1alpha1.SeverityCritical]), itoa(ev.Counts[v1alpha1.SeverityHigh]), itoa(ev.Counts[v1alpha1.SeverityUnknown])}, "/")
			if got != tc.counts {
				t.Errorf("counts %s, want %s", got, tc.counts)
			}
			if g := strings.Join(ev.Exceeded, ","); g != tc.exceeded {
				t.Errorf("exceeded %q, want %q", g, tc.exceeded)
			}
			if g := strings.Join(ev.Excepted, ","); g != tc.excepted {
				t.Errorf("excepted %q, want %q", g, tc.excepted)
			}
			if g := strings.Join(ev.Expired, ","); g != tc.expired {
				t.Errorf("expired %q, want %q", g, tc.expired)
			}
		})
	}
}

func itoa(v int32) string { return string(rune('0' + v)) }

func TestSecretsAndMisconfigurations(t *testing.T) {
	if SecretsExceeded(nil, 5) || !SecretsExceeded(&v1alpha1.SecretThreshold{}, 1) || SecretsExceeded(&v1alpha1.SecretThreshold{Maximum: i32(2)}, 2) {
		t.Error("secret limits wrong")
	}
	sevs := []v1alpha1.Severity{v1alpha1.SeverityLow, v1alpha1.SeverityHigh, v1alpha1.SeverityMedium}
	if got := MisconfigurationsExceeded(&v1alpha1.MisconfigurationThreshold{}, sevs); len(got) != 2 {
		t.Errorf("default LOW: %v", got)
	}
	if got := MisconfigurationsExceeded(&v1alpha1.MisconfigurationThreshold{MaxSeverity: v1alpha1.SeverityHigh}, sevs); len(got) != 0 {
		t.Errorf("max HIGH: %v", got)
	}
	if MisconfigurationsExceeded(nil, sevs) != nil {
		t.Error("no section, no limit")
	}
}
