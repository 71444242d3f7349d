package controller

import (
	"encoding/json"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/scan"
)

// TestSummariesAreBounded: 5,000 vulnerabilities, secrets and misconfigurations still give an
// ImageAttestation status of a few KiB (etcd's request limit is 1.5 MiB), with exact counts and the
// 20 most severe findings first.
func TestSummariesAreBounded(t *testing.T) {
	sevs := []string{"LOW", "UNKNOWN", "CRITICAL", "MEDIUM", "HIGH"}
	var vs []scan.Vulnerability
	var ss []scan.Secret
	var ms []scan.Misconfiguration
	long := string(make([]byte, 4000))
	for i := range 5000 {
		vs = append(vs, scan.Vulnerability{ID: fmt.Sprintf("CVE-2026-%05d", i), Package: "pkg" + long, InstalledVersion: "1.0",
			FixedVersion: map[bool]string{true: "1.1"}[i%2 == 0], Severity: sevs[i%5], Title: long})
		ss = append(ss, scan.Secret{RuleID: "aws-access-key-id", Severity: "CRITICAL", Path: "/a/" + long, Line: i})
		ms = append(ms, scan.Misconfiguration{ID: "DS-0002", Severity: sevs[i%5], Title: long})
	}
	st := v1alpha1.ImageAttestationStatus{
		Vulnerabilities: vulnerabilitySummary(vs), Secrets: secretSummary(ss), Misconfigurations: misconfigurationSummary(ms),
	}
	v := st.Vulnerabilities
	if v.Critical != 1000 || v.High != 1000 || v.Medium != 1000 || v.Low != 1000 || v.Unknown != 1000 || v.Fixable != 2500 {
		t.Errorf("counts %+v", *v)
	}
	if len(v.Top) != v1alpha1.MaxTopFindings || v.Top[0].Severity != v1alpha1.SeverityCritical || v.Top[19].Severity != v1alpha1.SeverityCritical {
		t.Errorf("top findings must be the 20 most severe: first %s, last %s (%d)", v.Top[0].Severity, v.Top[19].Severity, len(v.Top))
	}
	if st.Secrets.Count != 5000 || len(st.Secrets.Top) != 20 || st.Misconfigurations.Count != 5000 || len(st.Misconfigurations.Top) != 20 {
		t.Errorf("secrets %d/%d, misconfigurations %d/%d", st.Secrets.Count, len(st.Secrets.Top), st.Misconfigurations.Count, len(st.Misconfigurations.Top))
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 256<<10 {
		t.Fatalf("status is %d bytes for 15,000 findings; it must stay small", len(data))
	}
	t.Logf("status for 15,000 findings: %d bytes", len(data))
}

func TestEscapingNote(t *testing.T) {
	if got := escapingNote(0, nil); got != "" {
		t.Errorf("no escaping entries: %q", got)
	}
	first := escapingNote(3, nil)
	if first != "; 3 tar entries outside a layer's root were skipped" {
		t.Errorf("first scan: %q", first)
	}
	prev := &metav1.Condition{Message: "0 critical, 0 high" + first}
	if got := escapingNote(-1, prev); got != first {
		t.Errorf("a cached rescan must keep the count: %q", got)
	}
	if got := escapingNote(-1, &metav1.Condition{Message: "0 critical"}); got != "" {
		t.Errorf("nothing to keep: %q", got)
	}
}
