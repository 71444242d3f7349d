package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/kubetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// now is the tests' clock: the report's "generated" time and the exceptions' window.
var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(n int) metav1.Time { return metav1.NewTime(now.AddDate(0, 0, n)) }

// inventory starts a kube-apiserver with Portcullis's CRDs and stores a small inventory: a Registry,
// two policies (production in Enforce mode with a HIGH threshold and exceptions, baseline in Audit
// mode), and three images with their verdicts and history, as the manager writes them.
func inventory(t *testing.T) client.Client {
	t.Helper()
	_, c, _ := kubetest.Start(t)
	ctx := context.Background()
	zero := int32(0)
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "main", Namespace: "shop"}, Spec: v1alpha1.RegistrySpec{URL: "https://registry.example.com"}},
		&v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "production", Namespace: "shop"}, Spec: v1alpha1.RepositoryPolicySpec{
			RegistryRef: v1alpha1.LocalObjectReference{Name: "main"}, Repositories: []string{"shop/**"}, Mode: v1alpha1.ModeEnforce,
			Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxCritical: &zero, MaxHigh: &zero, UnknownSeverityAs: v1alpha1.SeverityHigh,
				Exceptions: []v1alpha1.VulnerabilityException{
					{ID: "CVE-2024-0001", Expires: ptr(at(10)), Reason: "patched in the next release"},
					{ID: "CVE-2024-0002", Expires: ptr(at(90)), Reason: "not reachable"},
					{ID: "CVE-2024-0003", Reason: "no expiry"}}}}}},
		&v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "baseline", Namespace: "shop"}, Spec: v1alpha1.RepositoryPolicySpec{
			RegistryRef: v1alpha1.LocalObjectReference{Name: "main"}, Repositories: []string{"**"}}},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	image := func(repo, digestChar string, tags []string, vulns *v1alpha1.VulnerabilitySummary, prod []string, history ...v1alpha1.VerdictTransition) {
		t.Helper()
		ia := &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Name: strings.ReplaceAll(repo, "/", "-"), Namespace: "shop"},
			Spec: v1alpha1.ImageAttestationSpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "main"}, Repository: repo,
				Digest: "sha256:" + strings.Repeat(digestChar, 64), Tags: tags, MediaType: "application/vnd.oci.image.manifest.v1+json"}}
		if err := c.Create(ctx, ia); err != nil {
			t.Fatal(err)
		}
		ia.Status.Conditions = []metav1.Condition{{Type: v1alpha1.VulnerabilitiesScannedCondition, Status: metav1.ConditionTrue, Reason: "Scanned",
			Message: "scanned", LastTransitionTime: at(-30)}}
		ia.Status.Vulnerabilities = vulns
		ia.Status.Policies = []v1alpha1.PolicyResult{{Name: "baseline", ObservedGeneration: 1, Compliant: true},
			{Name: "production", ObservedGeneration: 1, Compliant: len(prod) == 0, Reasons: prod}}
		ia.Status.History = history
		if err := c.Status().Update(ctx, ia); err != nil {
			t.Fatal(err)
		}
	}
	tr := func(d int, verdict string, reasons ...string) v1alpha1.VerdictTransition {
		trigger := v1alpha1.TriggerFirstVerdict
		if d > -40 {
			trigger = v1alpha1.TriggerDBUpdate
		}
		return v1alpha1.VerdictTransition{Time: at(d), Verdict: verdict, Reasons: reasons, Trigger: trigger}
	}
	high := &v1alpha1.VulnerabilitySummary{High: 2, Unknown: 1, Fixable: 2, Top: []v1alpha1.VulnerabilityFinding{
		{ID: "CVE-2024-1000", Package: "golang.org/x/net", InstalledVersion: "v0.1.0", FixedVersion: "0.23.0", Severity: v1alpha1.SeverityHigh},
		{ID: "CVE-2024-1001", Package: "golang.org/x/text", InstalledVersion: "v0.3.5", FixedVersion: "0.3.8", Severity: v1alpha1.SeverityHigh},
		{ID: "CVE-2024-1002", Package: "golang.org/x/crypto", InstalledVersion: "v0.1.0", Severity: v1alpha1.SeverityUnknown}}}
	image("shop/api", "a", []string{"v1.0.0"}, high, []string{"VulnerabilityThresholdExceeded"},
		tr(-60, v1alpha1.VerdictCompliant), tr(-21, v1alpha1.VerdictNonCompliant, "production: VulnerabilityThresholdExceeded"))
	image("shop/web", "b", []string{"v2", "latest"}, &v1alpha1.VulnerabilitySummary{}, nil, tr(-50, v1alpha1.VerdictCompliant))
	image("shop/worker", "c", []string{"v3"}, &v1alpha1.VulnerabilitySummary{Unknown: 1, Top: []v1alpha1.VulnerabilityFinding{
		{ID: "CVE-2024-2000", Package: "golang.org/x/sys", InstalledVersion: "v0.1.0", Severity: v1alpha1.SeverityUnknown}}}, []string{"VulnerabilityThresholdExceeded"},
		tr(-45, v1alpha1.VerdictNonCompliant, "production: VulnerabilityThresholdExceeded"))
	return c
}

func ptr[T any](v T) *T { return &v }

// run runs the command line against c and returns its exit code, stdout and stderr.
func run(t *testing.T, c client.Client, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, Env{Stdout: &out, Stderr: &errOut, Now: func() time.Time { return now },
		Client: func(string, string) (client.Reader, error) { return c, nil }})
	return code, out.String(), errOut.String()
}

// golden compares got with testdata/name, or writes it there with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// TestReportAndWhatIf: `report` in each format and `what-if` against an envtest inventory, with
// golden outputs; exit codes; bad input refused with a reason.
func TestReportAndWhatIf(t *testing.T) {
	c := inventory(t)
	for _, f := range []struct{ format, file string }{{"markdown", "report.md"}, {"csv", "report.csv"}, {"json", "report.json"}, {"html", "report.html"}} {
		code, out, errOut := run(t, c, "report", "-o", f.format)
		if code != ExitOK {
			t.Fatalf("report -o %s: exit %d: %s", f.format, code, errOut)
		}
		golden(t, f.file, out)
	}
	// What the Markdown says, beyond matching its golden file.
	_, md, _ := run(t, c, "report", "-n", "shop")
	for _, want := range []string{"| production | Enforce | 1 | 2 | 2026-10-17 (45 d) |", "| shop/api@sha256:" + strings.Repeat("a", 64) + " | v1.0.0 | VulnerabilityThresholdExceeded | 2026-11-10 |",
		"| CVE-2024-0001 | 2026-12-11 | patched in the next release |"} {
		if !strings.Contains(md, want) {
			t.Errorf("the Markdown report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "CVE-2024-0002") || strings.Contains(md, "CVE-2024-0003") {
		t.Errorf("the Markdown report lists exceptions that do not expire within 30 days:\n%s", md)
	}

	// Allowing HIGH 2: shop/worker (one UNKNOWN, counted as HIGH) would pass; shop/api (HIGH 2 and
	// UNKNOWN 1: HIGH 3) still fails. Exit code 1: a verdict would change.
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	relaxed := write("relaxed.yaml", `apiVersion: registry.portcullis.dev/v1alpha1
kind: RepositoryPolicy
metadata: {name: production, namespace: shop}
spec:
  registryRef: {name: main}
  repositories: ["shop/**"]
  mode: Enforce
  scanning:
    vulnerabilities: {maxCritical: 0, maxHigh: 2, unknownSeverityAs: HIGH}
`)
	code, out, errOut := run(t, c, "what-if", "-f", relaxed)
	if code != ExitChanges {
		t.Fatalf("what-if relaxed: exit %d, want %d: %s%s", code, ExitChanges, out, errOut)
	}
	golden(t, "what-if-relaxed.txt", out)
	_, js, _ := run(t, c, "what-if", "-f", relaxed, "-o", "json")
	golden(t, "what-if-relaxed.json", js)

	// A stricter one scoped to shop/web: web stays compliant (no findings), the others are no
	// longer selected.
	scoped := write("scoped.yaml", `apiVersion: registry.portcullis.dev/v1alpha1
kind: RepositoryPolicy
metadata: {name: production}
spec:
  registryRef: {name: main}
  repositories: ["shop/web"]
  mode: Enforce
  scanning:
    vulnerabilities: {maxCritical: 0, maxHigh: 0, maxUnknown: 0}
`)
	code, out, _ = run(t, c, "what-if", "-f", scoped, "-n", "shop")
	if code != ExitChanges || !hasRow(out, "shop/api@sha256:aaaaaaaaaaaa", "v1.0.0", "NonCompliant", "NotSelected") ||
		!hasRow(out, "shop/worker@sha256:cccccccccccc", "v3", "NonCompliant", "NotSelected") || strings.Contains(out, "shop/web@") {
		t.Errorf("what-if scoped: exit %d:\n%s", code, out)
	}

	// The policy as applied: nothing changes, exit 0.
	same := write("same.yaml", `apiVersion: registry.portcullis.dev/v1alpha1
kind: RepositoryPolicy
metadata: {name: baseline, namespace: shop}
spec:
  registryRef: {name: main}
  repositories: ["**"]
`)
	if code, out, errOut := run(t, c, "what-if", "-f", same); code != ExitOK || !strings.Contains(out, "no verdict would change (3 unchanged)") {
		t.Errorf("what-if unchanged: exit %d: %s%s", code, out, errOut)
	}

	// Bad input: exit 2 and a reason, nothing else.
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"what-if"}, "what-if needs -f POLICY.yaml"},
		{[]string{"what-if", "-f", write("typo.yaml", "apiVersion: registry.portcullis.dev/v1alpha1\nkind: RepositoryPolicy\nmetadata: {name: p}\nspec: {registryRef: {name: main}, repositoriez: [x]}\n")}, `unknown field "repositoriez"`},
		{[]string{"what-if", "-f", write("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")}, "want a RepositoryPolicy"},
		{[]string{"what-if", "-f", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"what-if", "-f", write("two.yaml", "apiVersion: registry.portcullis.dev/v1alpha1\nkind: RepositoryPolicy\nmetadata: {name: a}\nspec: {registryRef: {name: main}}\n---\n# the second\napiVersion: registry.portcullis.dev/v1alpha1\nkind: RepositoryPolicy\nmetadata: {name: b}\nspec: {registryRef: {name: main}}\n")}, "holds more than one document"},
		{[]string{"what-if", "-f", write("registry.yaml", "apiVersion: registry.portcullis.dev/v1alpha1\nkind: Registry\nmetadata: {name: r}\nspec: {url: 'http://x', insecure: true}\n")}, `kind "Registry"`},
		{[]string{"what-if", "-n", "other", "-f", relaxed}, `the policy's namespace "shop" does not match -n "other"`},
		{[]string{"report", "-o", "pdf"}, `unknown format "pdf"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	} {
		code, out, errOut := run(t, c, bad.args...)
		if code != ExitError || out != "" || !strings.Contains(errOut, bad.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", bad.args, code, out, errOut, bad.want)
		}
	}
	// An unknown flag: said once, with the usage.
	if code, _, errOut := run(t, c, "what-if", "--bogus"); code != ExitError || strings.Count(errOut, "flag provided but not defined: -bogus") != 1 ||
		!strings.Contains(errOut, "Usage: portcullis what-if") {
		t.Errorf("what-if --bogus: exit %d, stderr %q", code, errOut)
	}
	// --help on every command: exit 0, the usage on stderr.
	for _, cmd := range []string{"report", "what-if"} {
		if code, _, errOut := run(t, c, cmd, "--help"); code != ExitOK || !strings.Contains(errOut, "Usage: portcullis "+cmd) {
			t.Errorf("%s --help: exit %d, %q", cmd, code, errOut)
		}
	}
}

// hasRow reports whether a line of the table out has exactly the fields want.
func hasRow(out string, want ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(l), " ") == strings.Join(want, " ") {
			return true
		}
	}
	return false
}
