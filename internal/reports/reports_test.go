package reports

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/kubetest"
)

// kyvernoVersion is the Kyverno release whose module ships the wg-policy PolicyReport CRD
// (config/crds/policyreport), the one Policy Reporter reads.
const kyvernoVersion = "v1.19.1"

// moduleDir downloads module@version (the Go module proxy) and returns its folder; an empty version
// is the one go.mod requires.
func moduleDir(t *testing.T, module, version string) string {
	t.Helper()
	if version == "" {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
		if err != nil {
			t.Fatalf("locating %s: %v", module, err)
		}
		return strings.TrimSpace(string(out))
	}
	cmd := exec.Command("go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("downloading %s@%s: %v", module, version, err)
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("downloading %s@%s: %s", module, version, out)
	}
	return m.Dir
}

// startEnv runs a kube-apiserver with Portcullis's CRDs and the upstream report CRDs, and r in a
// manager; it returns a client.
func startEnv(t *testing.T, r *Reconciler) client.Client {
	t.Helper()
	cfg, c, scheme := kubetest.Start(t,
		filepath.Join(moduleDir(t, "github.com/openreports/reports-api", ""), "config", "crd", "openreports.io_reports.yaml"),
		filepath.Join(moduleDir(t, "github.com/kyverno/kyverno", kyvernoVersion), "config", "crds", "policyreport", "wgpolicyk8s.io_policyreports.yaml"))
	r.Client = c // reads and writes straight to the API server
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// newImage creates an ImageAttestation of reg with its verdicts: policy name → reasons (none:
// compliant).
func newImage(t *testing.T, c client.Client, reg *v1alpha1.Registry, repo string, n int, verdicts map[string][]string) *v1alpha1.ImageAttestation {
	t.Helper()
	ctx := context.Background()
	digest := "sha256:" + strings.Repeat("0", 62) + string(rune('a'+n/16)) + string("0123456789abcdef"[n%16])
	ia := &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Name: repo + "-" + digest[len(digest)-2:], Namespace: reg.Namespace,
		Labels: map[string]string{v1alpha1.RegistryLabel: reg.Name}},
		Spec: v1alpha1.ImageAttestationSpec{RegistryRef: v1alpha1.LocalObjectReference{Name: reg.Name}, Repository: "team/" + repo, Digest: digest,
			Tags: []string{"v1"}, MediaType: "application/vnd.oci.image.manifest.v1+json"}}
	if err := c.Create(ctx, ia); err != nil {
		t.Fatal(err)
	}
	setVerdicts(t, c, ia, verdicts)
	return ia
}

func setVerdicts(t *testing.T, c client.Client, ia *v1alpha1.ImageAttestation, verdicts map[string][]string) {
	t.Helper()
	ia.Status.Policies = nil
	for _, p := range []string{"prod", "audit"} {
		if reasons, ok := verdicts[p]; ok {
			ia.Status.Policies = append(ia.Status.Policies, v1alpha1.PolicyResult{Name: p, ObservedGeneration: 1, Compliant: len(reasons) == 0, Reasons: reasons})
		}
	}
	ia.Status.Vulnerabilities = &v1alpha1.VulnerabilitySummary{High: 2}
	if err := c.Status().Update(context.Background(), ia); err != nil {
		t.Fatal(err)
	}
}

// readReport reads reg's report of format f (nil when none).
func readReport(t *testing.T, c client.Client, reg *v1alpha1.Registry, f Format) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(f.APIVersion)
	u.SetKind(f.Kind)
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: reg.Namespace, Name: Name(reg.Name)}, u); err != nil {
		return nil
	}
	return u
}

func waitReport(t *testing.T, c client.Client, reg *v1alpha1.Registry, f Format, what string, cond func(*unstructured.Unstructured) bool) *unstructured.Unstructured {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if u := readReport(t, c, reg, f); u != nil && cond(u) {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out waiting for %s; last %v", f.Kind, what, readReport(t, c, reg, f))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func summary(u *unstructured.Unstructured, key string) int64 {
	n, _, _ := unstructured.NestedInt64(u.Object, "summary", key)
	return n
}

func results(u *unstructured.Unstructured) []map[string]any {
	items, _, _ := unstructured.NestedSlice(u.Object, "results")
	out := make([]map[string]any, 0, len(items))
	for _, i := range items {
		out = append(out, i.(map[string]any))
	}
	return out
}

// TestPolicyReports: against the upstream OpenReports and wg-policy CRDs, one report per Registry
// with one result per (image, policy): fail for an Enforce policy's failure, warn for an Audit
// one's, pass, error; the reasons as properties; failures first and at most MaxResults, the summary
// counting all; owned by the Registry; written again when a verdict changes and not when only a
// scan time does.
func TestPolicyReports(t *testing.T) {
	ctx := context.Background()
	r := &Reconciler{Formats: []Format{OpenReports, WGPolicy}, MaxResults: 5, MinInterval: 200 * time.Millisecond}
	c := startEnv(t, r)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "main", Namespace: "team"}, Spec: v1alpha1.RegistrySpec{URL: "https://registry.example.com"}}
	prod := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "prod", Namespace: "team"}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "main"}, Repositories: []string{"**"}, Mode: v1alpha1.ModeEnforce}}
	audit := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "audit", Namespace: "team"}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "main"}, Repositories: []string{"**"}, Mode: v1alpha1.ModeAudit}}
	for _, o := range []client.Object{ns, reg, prod, audit} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// 4 images × 2 policies: 8 results, 5 kept.
	bad := newImage(t, c, reg, "api", 1, map[string][]string{"prod": {"SignatureMissing"}, "audit": {"VulnerabilityThresholdExceeded"}})
	newImage(t, c, reg, "web", 2, map[string][]string{"prod": nil, "audit": nil})
	newImage(t, c, reg, "db", 3, map[string][]string{"prod": {"ScanFailed"}, "audit": nil})
	good := newImage(t, c, reg, "ui", 4, map[string][]string{"prod": nil, "audit": nil})

	complete := func(u *unstructured.Unstructured) bool {
		return summary(u, "pass")+summary(u, "fail")+summary(u, "warn")+summary(u, "error") == 8
	}
	for _, f := range r.Formats {
		u := waitReport(t, c, reg, f, "all 8 results counted", complete)
		if summary(u, "pass") != 5 || summary(u, "fail") != 1 || summary(u, "warn") != 1 || summary(u, "error") != 1 {
			t.Errorf("%s summary: %v; want pass 5, fail 1, warn 1, error 1", f.Kind, u.Object["summary"])
		}
		res := results(u)
		if len(res) != 5 || u.GetAnnotations()[OmittedAnnotation] != "3" {
			t.Fatalf("%s: %d results, omitted %q; want 5 and 3 omitted", f.Kind, len(res), u.GetAnnotations()[OmittedAnnotation])
		}
		order := []string{}
		for _, x := range res {
			order = append(order, x["result"].(string))
		}
		if strings.Join(order[:3], ",") != "fail,error,warn" || order[3] != "pass" {
			t.Errorf("%s result order: %v; want fail, error, warn, then passes", f.Kind, order)
		}
		first := res[0]
		props := first["properties"].(map[string]any)
		if first["policy"] != "prod" || first["rule"] != "SignatureMissing" || props["reasons"] != "SignatureMissing" ||
			props["image"] != "team/api@"+bad.Spec.Digest || props["tags"] != "v1" || first["severity"] != "high" {
			t.Errorf("%s first result: %v", f.Kind, first)
		}
		subj := first["resources"].([]any)[0].(map[string]any)
		if subj["kind"] != "ImageAttestation" || subj["name"] != bad.Name {
			t.Errorf("%s result resource: %v; want the ImageAttestation", f.Kind, subj)
		}
		if refs := u.GetOwnerReferences(); len(refs) != 1 || refs[0].Kind != "Registry" || refs[0].UID != reg.UID {
			t.Errorf("%s owners: %v; want the Registry", f.Kind, refs)
		}
	}
	if u := readReport(t, c, reg, OpenReports); u.Object["source"] != Source {
		t.Errorf("OpenReports source: %v", u.Object["source"])
	}

	// Only a scan time changes: nothing is written.
	time.Sleep(time.Second) // past MinInterval and any event still queued
	writes := r.Writes()
	good.Status.LastScanTime = &metav1.Time{Time: time.Now()}
	if err := c.Status().Update(ctx, good); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if got := r.Writes(); got != writes {
		t.Errorf("a scan time change wrote the reports %d times; want none", got-writes)
	}

	// A verdict changes: both reports follow, once each.
	setVerdicts(t, c, bad, map[string][]string{"prod": nil, "audit": nil})
	for _, f := range r.Formats {
		waitReport(t, c, reg, f, "the fixed image passing", func(u *unstructured.Unstructured) bool {
			return summary(u, "pass") == 7 && summary(u, "fail") == 0
		})
	}
	time.Sleep(time.Second)
	if got := r.Writes() - writes; got != 2 {
		t.Errorf("a verdict change wrote the reports %d times; want 2 (one per format)", got)
	}
}
