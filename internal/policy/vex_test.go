package policy

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

const vexDigest = "sha256:d918427dce3998b4ad6000eaf7a81338eabe25fdc224bee10b34dda3c56a004d"

func vexDoc(t *testing.T, timestamp string, statements ...map[string]any) VEXDocument {
	t.Helper()
	list := make([]any, len(statements))
	for i, s := range statements {
		list[i] = s
	}
	b, err := json.Marshal(map[string]any{"@context": "https://openvex.dev/ns/v0.2.0", "timestamp": timestamp, "statements": list})
	if err != nil {
		t.Fatal(err)
	}
	return VEXDocument{Source: "sha256:aaaa", Authority: "vendor", Document: b}
}

func imageProduct(subcomponents ...string) map[string]any {
	p := map[string]any{"@id": "pkg:oci/api@sha256%3Ad918427dce3998b4ad6000eaf7a81338eabe25fdc224bee10b34dda3c56a004d?repository_url=registry.example.com"}
	if len(subcomponents) > 0 {
		var subs []any
		for _, s := range subcomponents {
			subs = append(subs, map[string]any{"@id": s})
		}
		p["subcomponents"] = subs
	}
	return p
}

func statement(vuln any, status string, products ...any) map[string]any {
	return map[string]any{"vulnerability": vuln, "products": products, "status": status, "justification": "vulnerable_code_not_in_execute_path"}
}

func TestApplyVEX(t *testing.T) {
	text := Finding{ID: "CVE-2021-38561", Severity: v1alpha1.SeverityHigh, Package: "golang.org/x/text"}
	zlib := Finding{ID: "CVE-2023-45853", Severity: v1alpha1.SeverityCritical, Package: "zlib1g"}
	findings := []Finding{text, zlib}
	cases := []struct {
		name     string
		docs     []VEXDocument
		want     []string // IDs suppressed
		problems int
	}{
		{"not_affected for the image", []VEXDocument{vexDoc(t, "2026-01-01T00:00:00Z", statement(map[string]any{"name": "CVE-2021-38561"}, "not_affected", imageProduct()))},
			[]string{"CVE-2021-38561"}, 0},
		{"fixed, matched by an alias", []VEXDocument{vexDoc(t, "2026-01-01T00:00:00Z",
			statement(map[string]any{"name": "GHSA-ppp9-7jff-5vj2", "aliases": []string{"CVE-2021-38561"}}, "fixed", imageProduct()))},
			[]string{"CVE-2021-38561"}, 0},
		{"the image with the finding's package as subcomponent", []VEXDocument{vexDoc(t, "2026-01-01T00:00:00Z",
			statement("CVE-2021-38561", "not_affected", imageProduct("pkg:golang/golang.org/x/text@v0.3.5")))},
			[]string{"CVE-2021-38561"}, 0},
		{"the image with another package as subcomponent", []VEXDocument{vexDoc(t, "2026-01-01T00:00:00Z",
			statement("CVE-2021-38561", "not_affected", imageProduct("pkg:golang/golang.org/x/net@v0.1.0")))},
			nil, 0},
		{"the package itself as product", []VEXDocument{vexDoc(t, "2026-01-01T00:00:00Z",
			statement("CVE-2023-45853", "not_affected", "pkg:deb/debian/zlib1g@1.2.13?arch=amd64"))},
			[]string{"CVE-2023-45853"}, 0},
		{"another image", []VEXDocument{vexDoc(t, "2026-01-01T00:00:00Z",
			statement("CVE-2021-38561", "not_affected", map[string]any{"@id": "pkg:oci/api@sha256%3A0000000000000000000000000000000000000000000000000000000000000000"}))},
			nil, 0},
		{"affected and under_investigation suppress nothing", []VEXDocument{vexDoc(t, "2026-01-01T00:00:00Z",
			statement("CVE-2021-38561", "affected", imageProduct()), statement("CVE-2023-45853", "under_investigation", imageProduct()))},
			nil, 0},
		{"a later affected statement wins", []VEXDocument{
			vexDoc(t, "2026-01-01T00:00:00Z", statement("CVE-2021-38561", "not_affected", imageProduct())),
			vexDoc(t, "2026-02-01T00:00:00Z", statement("CVE-2021-38561", "affected", imageProduct()))},
			nil, 0},
		{"a later not_affected statement wins", []VEXDocument{
			vexDoc(t, "2026-02-01T00:00:00Z", statement("CVE-2021-38561", "not_affected", imageProduct())),
			vexDoc(t, "2026-01-01T00:00:00Z", statement("CVE-2021-38561", "affected", imageProduct()))},
			[]string{"CVE-2021-38561"}, 0},
		{"not a document", []VEXDocument{{Source: "sha256:bbbb", Document: []byte(`"text"`)}}, nil, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kept, suppressed, problems := ApplyVEX(findings, tc.docs, vexDigest)
			var got []string
			for _, s := range suppressed {
				got = append(got, s.ID)
				if s.Source == "" || s.Authority != tc.docs[len(tc.docs)-1].Authority && s.Authority != tc.docs[0].Authority || s.Status == "" {
					t.Errorf("suppression %+v lacks its source, authority or status", s)
				}
			}
			if !slices.Equal(got, tc.want) || len(kept)+len(suppressed) != len(findings) || len(problems) != tc.problems {
				t.Fatalf("suppressed %v (want %v), kept %d, problems %v", got, tc.want, len(kept), problems)
			}
		})
	}
}

// TestEvaluateWithVEX checks that signed VEX statements change the verdict only for a policy that
// applies VEX, and that the verdict says what was suppressed and which documents were ignored.
func TestEvaluateWithVEX(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	zero := int32(0)
	spec := &v1alpha1.RepositoryPolicySpec{Scanning: &v1alpha1.ScanningSpec{
		Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxCritical: &zero, MaxHigh: &zero}}}
	ev := Evidence{Scan: ScanDone, Digest: vexDigest,
		Vulnerabilities: []Finding{{ID: "CVE-2021-38561", Severity: v1alpha1.SeverityHigh, Package: "golang.org/x/text"}},
		Signature: &SignatureOutcome{Verified: true,
			VEX:        []VEXDocument{vexDoc(t, "2026-01-01T00:00:00Z", statement("CVE-2021-38561", "not_affected", imageProduct()))},
			VEXIgnored: []string{"sha256:cccc: not signed for this digest by a VEX authority (vendor)"}}}

	if v := Evaluate(spec, ev, now); v.Compliant || v.VEX != nil {
		t.Fatalf("without scanning.vex the document must not apply: %+v", v)
	}
	spec.Scanning.VEX = &v1alpha1.VEXSpec{Authorities: []string{"vendor"}}
	v := Evaluate(spec, ev, now)
	if !v.Compliant || v.VEX == nil || len(v.VEX.Suppressed) != 1 || len(v.VEX.Ignored) != 1 {
		t.Fatalf("with scanning.vex: %+v", v)
	}
	if s := v.VEX.Suppressed[0]; s.ID != "CVE-2021-38561" || s.Package != "golang.org/x/text" || s.Source != "sha256:aaaa" || s.Justification == "" {
		t.Fatalf("suppression %+v", s)
	}
	ev.Signature.VEX = nil
	if v := Evaluate(spec, ev, now); v.Compliant || v.VEX == nil || len(v.VEX.Suppressed) != 0 {
		t.Fatalf("no signed document: %+v", v)
	}
}
