package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// startControlPlaneWithAudit starts kube-apiserver + etcd with no CRDs, RBAC authorization (envtest's
// default) and an audit log of every request's metadata at auditLog.
func startControlPlaneWithAudit(t *testing.T, dir, auditLog string) (*rest.Config, string) {
	t.Helper()
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{}
	env.ControlPlane.GetAPIServer().Configure().
		Set("audit-policy-file", policy).
		Set("audit-log-path", auditLog).
		Set("audit-log-format", "json")
	return startEnv(t, dir, env)
}

// previousCRDs returns the CRDs of the most recent commit whose config/crd/bases differs from the
// working tree (the version a user upgrades from), and that commit.
func previousCRDs(t *testing.T) (string, []*unstructured.Unstructured) {
	t.Helper()
	root := filepath.Join("..", "..")
	revs, err := exec.Command("git", "-C", root, "log", "--format=%h", "-n", "50", "--", "config/crd/bases").Output()
	if err != nil {
		t.Skipf("no git history to upgrade from (%v)", err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	for _, rev := range strings.Fields(string(revs)) {
		var objs []*unstructured.Unstructured
		differs := false
		for _, f := range files {
			rel := "config/crd/bases/" + filepath.Base(f)
			old, err := exec.Command("git", "-C", root, "show", rev+":"+rel).Output()
			if err != nil {
				continue // the kind did not exist yet
			}
			cur, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			differs = differs || !bytes.Equal(old, cur)
			objs = append(objs, decodeObjects(t, rel+"@"+rev, old)...)
		}
		if differs {
			return rev, objs
		}
	}
	t.Skip("no earlier commit with different CRDs in the last 50 that touched them")
	return "", nil
}

// apply server-side applies u; strict rejects unknown or duplicate fields instead of dropping them.
func apply(t *testing.T, c client.Client, u *unstructured.Unstructured, strict bool) {
	t.Helper()
	validation := "Ignore"
	if strict {
		validation = "Strict"
	}
	u = u.DeepCopy()
	u.SetResourceVersion("")
	//nolint:staticcheck // client.Apply on unstructured objects is the simplest SSA here.
	if err := c.Patch(context.Background(), u, client.Apply, client.FieldOwner("install-test"), client.ForceOwnership,
		client.FieldValidation(validation)); err != nil {
		t.Fatalf("applying %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
}

func waitEstablished(t *testing.T, c client.Client, crds []*unstructured.Unstructured) {
	t.Helper()
	for _, u := range crds {
		waitUntil(t, "CRD "+u.GetName()+" established", func() bool {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(context.Background(), client.ObjectKey{Name: u.GetName()}, crd); err != nil {
				return false
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true
				}
			}
			return false
		})
	}
}

func readObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeObjects(t, path, data)
}

func decodeObjects(t *testing.T, what string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// trivyOperatorCRDs returns trivy-operator's VulnerabilityReport and ExposedSecretReport CRDs from its
// module, for the report export (--trivy-operator-reports).
func trivyOperatorCRDs(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aquasecurity/trivy-operator").Output()
	if err != nil {
		t.Fatalf("locating the trivy-operator module: %v", err)
	}
	var out []*unstructured.Unstructured
	for _, f := range []string{"aquasecurity.github.io_vulnerabilityreports.yaml", "aquasecurity.github.io_exposedsecretreports.yaml"} {
		out = append(out, readObjects(t, filepath.Join(strings.TrimSpace(string(dir)), "deploy", "helm", "crds", f))...)
	}
	return out
}

// policyReportCRDs are the PolicyReport CRDs as their projects publish them: OpenReports' Report
// (its Go module, the version go.mod requires) and the wg-policy PolicyReport as Kyverno ships it.
func policyReportCRDs(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/openreports/reports-api").Output()
	if err != nil {
		t.Fatalf("locating the reports-api module: %v", err)
	}
	out := readObjects(t, filepath.Join(strings.TrimSpace(string(dir)), "config", "crd", "openreports.io_reports.yaml"))
	cmd := exec.Command("go", "mod", "download", "-json", "github.com/kyverno/kyverno@"+kyvernoVersion)
	cmd.Dir = t.TempDir()
	js, err := cmd.Output()
	var m struct{ Dir string }
	if err != nil || json.Unmarshal(js, &m) != nil || m.Dir == "" {
		t.Fatalf("downloading kyverno %s for its PolicyReport CRD: %v %s", kyvernoVersion, err, js)
	}
	return append(out, readObjects(t, filepath.Join(m.Dir, "config", "crds", "policyreport", "wgpolicyk8s.io_policyreports.yaml"))...)
}

// kyvernoVersion is the Kyverno release whose module ships the wg-policy PolicyReport CRD.
const kyvernoVersion = "v1.19.1"

// checkMonitorSelectsService checks that the ServiceMonitor selects the metrics Service of the install
// and scrapes one of its ports by name.
func checkMonitorSelectsService(t *testing.T, monitors, install []*unstructured.Unstructured) {
	t.Helper()
	if len(monitors) != 1 || monitors[0].GetKind() != "ServiceMonitor" {
		t.Fatalf("config/prometheus: want one ServiceMonitor, got %d objects", len(monitors))
	}
	sm := monitors[0]
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	for _, o := range install {
		if o.GetKind() != "Service" || o.GetNamespace() != sm.GetNamespace() {
			continue
		}
		labels := o.GetLabels()
		matches := len(sel) > 0
		for k, v := range sel {
			matches = matches && labels[k] == v
		}
		ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
		for _, e := range endpoints {
			for _, p := range ports {
				if matches && e.(map[string]any)["port"] == p.(map[string]any)["name"] {
					return
				}
			}
		}
	}
	t.Errorf("ServiceMonitor %s selects %v, port %v: no Service of config/default in %s matches", sm.GetName(), sel, endpoints, sm.GetNamespace())
}

// deploymentArgs returns the manager container's arguments from config/default's Deployment, with the
// flags in overrides replaced (an empty value drops the flag).
func deploymentArgs(t *testing.T, objs []*unstructured.Unstructured, overrides map[string]string) []string {
	t.Helper()
	return containerArgs(t, objs, "manager", overrides)
}

// containerArgs returns the arguments of the named container of config/default's Deployment, with
// the flags in overrides replaced (an empty value drops the flag).
func containerArgs(t *testing.T, objs []*unstructured.Unstructured, name string, overrides map[string]string) []string {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			c := c.(map[string]any)
			if c["name"] != name {
				continue
			}
			var out []string
			for _, a := range c["args"].([]any) {
				arg := a.(string)
				flag, _, _ := strings.Cut(arg, "=")
				if v, ok := overrides[flag]; ok {
					if v == "" {
						continue
					}
					arg = flag + "=" + v
				}
				out = append(out, arg)
			}
			return out
		}
	}
	t.Fatalf("config/default has no Deployment with a %s container", name)
	return nil
}

// impersonating writes a copy of kubeconfig whose user acts as user (Kubernetes impersonation), so
// the API server authorizes every request as that user.
func impersonating(t *testing.T, dir, kubeconfig, user string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		a.Impersonate = user
	}
	path := filepath.Join(dir, "kubeconfig-"+strings.ReplaceAll(user, ":", "-"))
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// grantedTo returns the rules config/default grants the ServiceAccount sa, through its bindings.
func grantedTo(t *testing.T, objs []*unstructured.Unstructured, sa string) []rbacv1.PolicyRule {
	t.Helper()
	roles := map[string][]rbacv1.PolicyRule{}
	for _, o := range objs {
		if o.GetKind() == "Role" || o.GetKind() == "ClusterRole" {
			var r rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
				t.Fatal(err)
			}
			roles[o.GetKind()+"/"+o.GetName()] = r.Rules
		}
	}
	var rules []rbacv1.PolicyRule
	for _, o := range objs {
		if o.GetKind() != "RoleBinding" && o.GetKind() != "ClusterRoleBinding" {
			continue
		}
		var b rbacv1.RoleBinding
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa }) {
			rules = append(rules, roles[b.RoleRef.Kind+"/"+b.RoleRef.Name]...)
		}
	}
	if len(rules) == 0 {
		t.Fatalf("config/default grants the ServiceAccount %s nothing", sa)
	}
	return rules
}

// unexercised lists permissions config/default grants that this test's run cannot reach, each with
// the reason the manager still needs it. Keys are group/resource/verb ("" is the core group).
var unexercised = map[string]string{
	"/namespaces/get":            "the admission webhook reads a Namespace the cache does not hold yet (created a moment before its first workload) once from the API server",
	"/events/patch":              "client-go's core/v1 recorder (leader election) patches an Event when it repeats",
	"events.k8s.io/events/patch": "the events.k8s.io recorder patches an Event into a series when it repeats within 6 minutes",
	"aquasecurity.github.io/vulnerabilityreports/patch": "a rescan (e.g. after a vulnerability DB update) patches the report it created",
	"aquasecurity.github.io/exposedsecretreports/patch": "a rescan (e.g. after a vulnerability DB update) patches the report it created",
	"openreports.io/reports/create":                     "server-side apply authorizes create when the report does not exist yet; the audit log records the request as patch",
	"wgpolicyk8s.io/policyreports/create":               "server-side apply authorizes create when the report does not exist yet; the audit log records the request as patch",
}

// checkRBACExact reads the audit log: no request made as the manager's ServiceAccount may have been
// refused, and every granted group/resource/verb must have been used (or be listed in unexercised).
func checkRBACExact(t *testing.T, auditLog string, granted []rbacv1.PolicyRule) {
	t.Helper()
	user := "system:serviceaccount:" + installNS + ":" + managerSA
	f, err := os.Open(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	used := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev struct {
			Verb             string `json:"verb"`
			RequestURI       string `json:"requestURI"`
			ImpersonatedUser *struct {
				Username string `json:"username"`
			} `json:"impersonatedUser"`
			ObjectRef *struct {
				APIGroup    string `json:"apiGroup"`
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
			} `json:"objectRef"`
			ResponseStatus *struct {
				Code int `json:"code"`
			} `json:"responseStatus"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit log: %v", err)
		}
		if ev.ImpersonatedUser == nil || ev.ImpersonatedUser.Username != user {
			continue
		}
		if ev.ResponseStatus != nil && ev.ResponseStatus.Code == 403 {
			t.Errorf("the manager was refused %s %s: config/default lacks a permission it needs", ev.Verb, ev.RequestURI)
		}
		if ev.ObjectRef == nil {
			continue
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		used[ev.ObjectRef.APIGroup+"/"+res+"/"+ev.Verb]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(used) == 0 {
		t.Fatalf("the audit log has no request made as %s", user)
	}
	t.Logf("requests made as %s: %v", user, used)
	for _, r := range granted {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					key := g + "/" + res + "/" + v
					if used[key] > 0 {
						continue
					}
					if why, ok := unexercised[key]; ok {
						t.Logf("granted, not exercised here: %s (%s)", key, why)
						continue
					}
					t.Errorf("config/default grants %s but the manager never used it: remove it (the +kubebuilder:rbac marker or config/rbac), or list it in unexercised with why it is needed", key)
				}
			}
		}
	}
}
