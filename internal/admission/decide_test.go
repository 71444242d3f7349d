package admission

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func TestParseReference(t *testing.T) {
	const dg = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	for _, tc := range []struct {
		in                           string
		host, repo, tag, digest, err string
	}{
		{in: "registry.example.com/shop/api:v1", host: "registry.example.com", repo: "shop/api", tag: "v1"},
		{in: "127.0.0.1:5000/shop/api", host: "127.0.0.1:5000", repo: "shop/api", tag: "latest"},
		{in: "nginx", host: "index.docker.io", repo: "library/nginx", tag: "latest"},
		{in: "docker.io/library/nginx:1.27", host: "index.docker.io", repo: "library/nginx", tag: "1.27"},
		{in: "Registry.Example.com/shop/api@" + dg, host: "registry.example.com", repo: "shop/api", digest: dg},
		{in: "registry.example.com:443/shop/api:v2@" + dg, host: "registry.example.com:443", repo: "shop/api", tag: "v2", digest: dg},
		{in: "registry.example.com/shop/api@sha256:short", err: "image"},
		{in: "UPPER/case:tag", err: "image"},
	} {
		got, err := ParseReference(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got.Host != tc.host || got.Repository != tc.repo || got.Tag != tc.tag || got.Digest != tc.digest {
			t.Errorf("%s: got %+v", tc.in, got)
		}
	}
	for in, want := range map[string]string{"https://registry-1.docker.io": "index.docker.io", "http://127.0.0.1:5000": "127.0.0.1:5000",
		"https://Harbor.Example.com/": "harbor.example.com", "::": ""} {
		if got := HostOf(in); got != want {
			t.Errorf("HostOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// pol is a policy of Registry "reg" in namespace "shop".
func pol(name string, mode v1alpha1.PolicyMode, gen int64, repos []string, tags ...string) v1alpha1.RepositoryPolicy {
	return v1alpha1.RepositoryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: gen},
		Spec: v1alpha1.RepositoryPolicySpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "reg"}, Repositories: repos,
			Mode: mode, Tags: v1alpha1.PatternSelector{Include: tags}},
	}
}

func attestation(tags []string, results ...v1alpha1.PolicyResult) *v1alpha1.ImageAttestation {
	return &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api-0123456789abcdef"},
		Spec:   v1alpha1.ImageAttestationSpec{Repository: "shop/api", Digest: "sha256:aa", Tags: tags},
		Status: v1alpha1.ImageAttestationStatus{Policies: results}}
}

func TestDecide(t *testing.T) {
	byTag := Reference{Image: "r.example/shop/api:v1", Host: "r.example", Repository: "shop/api", Tag: "v1"}
	byDigest := Reference{Image: "r.example/shop/api@sha256:aa", Host: "r.example", Repository: "shop/api", Digest: "sha256:aa"}
	reg := types.NamespacedName{Namespace: "shop", Name: "reg"}
	enforce := pol("prod", v1alpha1.ModeEnforce, 3, []string{"shop/**"})
	audit := pol("audit", v1alpha1.ModeAudit, 1, []string{"shop/**"})
	pass := func(p v1alpha1.RepositoryPolicy) v1alpha1.PolicyResult {
		return v1alpha1.PolicyResult{Name: p.Name, ObservedGeneration: p.Generation, Compliant: true}
	}
	fail := func(p v1alpha1.RepositoryPolicy, reasons ...string) v1alpha1.PolicyResult {
		return v1alpha1.PolicyResult{Name: p.Name, ObservedGeneration: p.Generation, Reasons: reasons}
	}
	for _, tc := range []struct {
		name     string
		ref      Reference
		cov      []Coverage
		settings Settings
		want     Outcome
		reasons  []string // of the first finding
	}{
		{name: "uncovered host admitted by default", ref: byTag, want: Admit},
		{name: "uncovered host refused by the flag", ref: byTag, settings: Settings{RefuseUncovered: true}, want: Refuse,
			reasons: []string{ReasonHostNotCovered}},
		{name: "covered, no policy governs the repository", ref: byTag, cov: []Coverage{{Registry: reg}}, want: Admit},
		{name: "compliant under Enforce", ref: byTag, want: Admit,
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce}, Digest: "sha256:aa",
				Attestation: attestation([]string{"v1"}, pass(enforce))}}},
		{name: "non-compliant under Enforce", ref: byTag, want: Refuse, reasons: []string{"SignatureMissing", "VulnerabilityThresholdExceeded"},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce}, Digest: "sha256:aa",
				Attestation: attestation([]string{"v1"}, fail(enforce, "SignatureMissing", "VulnerabilityThresholdExceeded"))}}},
		{name: "NotScanned under Enforce is refused", ref: byTag, want: Refuse, reasons: []string{"NotScanned"},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce}, Digest: "sha256:aa",
				Attestation: attestation([]string{"v1"}, fail(enforce, "NotScanned"))}}},
		{name: "non-compliant under Audit warns", ref: byTag, want: Warn, reasons: []string{"SignatureMissing"},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{audit}, Digest: "sha256:aa",
				Attestation: attestation([]string{"v1"}, fail(audit, "SignatureMissing"))}}},
		{name: "verdict of an older policy generation", ref: byTag, want: Refuse, reasons: []string{ReasonNotEvaluated},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce}, Digest: "sha256:aa",
				Attestation: attestation([]string{"v1"}, v1alpha1.PolicyResult{Name: "prod", ObservedGeneration: 2, Compliant: true})}}},
		{name: "no verdict of the policy yet", ref: byTag, want: Refuse, reasons: []string{ReasonNotEvaluated},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce}, Digest: "sha256:aa",
				Attestation: attestation([]string{"v1"})}}},
		{name: "digest not in the inventory", ref: byDigest, want: Refuse, reasons: []string{ReasonNotEvaluated},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce}, Digest: "sha256:aa"}}},
		{name: "tag not resolved", ref: byTag, want: Refuse, reasons: []string{ReasonTagNotResolved},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce}, ResolveError: "not found"}}},
		{name: "unknown tag under Audit warns", ref: byTag, want: Warn, reasons: []string{ReasonTagNotResolved},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{audit}}}},
		{name: "tag the policy does not select", ref: byTag, want: Admit,
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{pol("rel", v1alpha1.ModeEnforce, 1, []string{"shop/**"}, "release-*")}}}},
		{name: "digest whose tags the policy does not select", ref: byDigest, want: Admit,
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{pol("rel", v1alpha1.ModeEnforce, 1, []string{"shop/**"}, "release-*")},
				Digest: "sha256:aa", Attestation: attestation([]string{"dev-1"})}}},
		{name: "untagged digest is governed by its repository", ref: byDigest, want: Refuse, reasons: []string{ReasonNotEvaluated},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{pol("rel", v1alpha1.ModeEnforce, 1, []string{"shop/**"}, "release-*")},
				Digest: "sha256:aa", Attestation: attestation(nil)}}},
		{name: "Audit and Enforce: Enforce decides", ref: byTag, want: Refuse, reasons: []string{"SignatureMissing"},
			cov: []Coverage{{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce, audit}, Digest: "sha256:aa",
				Attestation: attestation([]string{"v1"}, fail(audit, "SignatureMissing"), fail(enforce, "Unused"))}}},
		{name: "two Registries on one host, one refuses", ref: byTag, want: Refuse, reasons: []string{"SignatureMissing"},
			cov: []Coverage{{Registry: types.NamespacedName{Namespace: "other", Name: "reg"}},
				{Registry: reg, Policies: []v1alpha1.RepositoryPolicy{enforce}, Digest: "sha256:aa",
					Attestation: attestation([]string{"v1"}, fail(enforce, "SignatureMissing"))}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.ref, tc.cov, tc.settings)
			if d.Outcome != tc.want {
				t.Fatalf("outcome %s, want %s (%+v)", d.Outcome, tc.want, d.Findings)
			}
			if tc.reasons == nil {
				if len(d.Findings) != 0 {
					t.Fatalf("findings %+v, want none", d.Findings)
				}
				return
			}
			if len(d.Findings) == 0 || strings.Join(d.Findings[0].Reasons, ",") != strings.Join(tc.reasons, ",") {
				t.Fatalf("findings %+v, want first with reasons %v", d.Findings, tc.reasons)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	refused := ImageDecision{Image: "r.example/shop/api:v1", Digest: "sha256:aa", Outcome: Refuse, Findings: []Finding{{
		Policy: types.NamespacedName{Namespace: "shop", Name: "prod"}, Mode: v1alpha1.ModeEnforce,
		Reasons: []string{"SignatureMissing", "VulnerabilityThresholdExceeded"}, Attestation: "api-0123"}}}
	warned := ImageDecision{Image: "r.example/shop/web:v2", Outcome: Warn, Findings: []Finding{{
		Policy: types.NamespacedName{Namespace: "shop", Name: "audit"}, Mode: v1alpha1.ModeAudit, Reasons: []string{"NotScanned"}}}}
	admitted := ImageDecision{Image: "r.example/shop/db:v3", Outcome: Admit}

	r := Summarize([]ImageDecision{admitted, warned})
	if !r.Allowed || r.Message != "" || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], `"r.example/shop/web:v2" fails RepositoryPolicy shop/audit (Audit): NotScanned`) {
		t.Fatalf("admitted with a warning: %+v", r)
	}
	r = Summarize([]ImageDecision{refused, warned, admitted})
	for _, want := range []string{`image "r.example/shop/api:v1" (sha256:aa)`, "RepositoryPolicy shop/prod (Enforce)",
		"SignatureMissing, VulnerabilityThresholdExceeded", "kubectl describe imageattestation -n shop api-0123"} {
		if !strings.Contains(r.Message, want) {
			t.Errorf("message %q lacks %q", r.Message, want)
		}
	}
	if r.Allowed || len(r.Warnings) != 1 {
		t.Fatalf("refused: %+v", r)
	}
	many := make([]ImageDecision, 200)
	for i := range many {
		many[i] = refused
		many[i].Findings = append(many[i].Findings, warned.Findings...)
	}
	r = Summarize(many)
	if len(r.Message) > maxMessage || len(r.Warnings) > maxWarnings || !strings.HasSuffix(r.Message, "…") {
		t.Fatalf("unbounded answer: message %d bytes, %d warnings", len(r.Message), len(r.Warnings))
	}
}

// TestDocsListEveryMetric: docs/admission.md's metrics table names every metric this package
// registers, with its exact help text, and nothing else.
func TestDocsListEveryMetric(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "admission.md"))
	if err != nil {
		t.Fatal(err)
	}
	rowRE := regexp.MustCompile("(?m)^\\| `(portcullis_[a-z0-9_]+)` \\|[^|]*\\|[^|]*\\| (.*?) \\|$")
	listed := map[string]string{}
	for _, m := range rowRE.FindAllStringSubmatch(string(doc), -1) {
		listed[m[1]] = m[2]
	}
	served := map[string]string{}
	for _, c := range []prometheus.Collector{admissions, admissionSeconds} {
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		d := (<-ch).String()
		name := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d)[1]
		served[name] = regexp.MustCompile(`help: "((?:[^"\\]|\\.)*)"`).FindStringSubmatch(d)[1]
	}
	if len(listed) != len(served) {
		t.Errorf("docs list %d metrics, the package serves %d", len(listed), len(served))
	}
	for name, help := range served {
		if got := listed[name]; got != help {
			t.Errorf("docs/admission.md lists %s with help %q; served: %q", name, got, help)
		}
	}
}
