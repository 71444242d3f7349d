package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// tokenPath is where the kubelet mounts a ServiceAccount token (and client-go reads it).
const tokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// checkScannerIsolation checks config/default's Pod: no container gets the ServiceAccount token
// by default; the manager mounts it explicitly; the scanner container mounts no token, no Secret
// and no env from a Secret, has CPU and memory limits, listens on a socket in a volume it shares
// with the manager (which names the same socket), and keeps its cache in a volume of its own.
func checkScannerIsolation(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	var pod map[string]any
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			pod, _, _ = unstructured.NestedMap(o.Object, "spec", "template", "spec")
		}
	}
	if pod == nil {
		t.Fatal("config/default has no Deployment")
	}
	if auto, ok := pod["automountServiceAccountToken"].(bool); !ok || auto {
		t.Errorf("Pod automountServiceAccountToken = %v, want false", pod["automountServiceAccountToken"])
	}
	credential := map[string]bool{} // volumes that hold a token or a Secret
	vols, _ := pod["volumes"].([]any)
	for _, v := range vols {
		v := v.(map[string]any)
		if _, ok := v["secret"]; ok {
			credential[v["name"].(string)] = true
		}
		if p, ok := v["projected"].(map[string]any); ok {
			for _, src := range p["sources"].([]any) {
				src := src.(map[string]any)
				if src["serviceAccountToken"] != nil || src["secret"] != nil {
					credential[v["name"].(string)] = true
				}
			}
		}
	}
	containers := map[string]map[string]any{}
	for _, c := range pod["containers"].([]any) {
		c := c.(map[string]any)
		containers[c["name"].(string)] = c
	}
	mounts := func(c map[string]any) map[string]string { // mountPath -> volume
		out := map[string]string{}
		ms, _ := c["volumeMounts"].([]any)
		for _, m := range ms {
			m := m.(map[string]any)
			out[m["mountPath"].(string)] = m["name"].(string)
		}
		return out
	}
	flag := func(c map[string]any, name string) string {
		args, _ := c["args"].([]any)
		for _, a := range args {
			if v, ok := strings.CutPrefix(a.(string), name+"="); ok {
				return v
			}
		}
		return ""
	}
	manager, scanner := containers["manager"], containers["scanner"]
	if manager == nil || scanner == nil {
		t.Fatalf("containers %v: want manager and scanner", containers)
	}
	mm, sm := mounts(manager), mounts(scanner)
	if !credential[mm[tokenPath]] {
		t.Errorf("the manager container mounts %q at %s, not a ServiceAccount token", mm[tokenPath], tokenPath)
	}
	for path, vol := range sm {
		if credential[vol] || strings.HasPrefix(path, "/var/run/secrets") {
			t.Errorf("the scanner container mounts the credential volume %s at %s", vol, path)
		}
	}
	if _, ok := scanner["envFrom"]; ok {
		t.Error("the scanner container takes env from a ConfigMap or Secret")
	}
	env, _ := scanner["env"].([]any)
	for _, e := range env {
		if vf, ok := e.(map[string]any)["valueFrom"].(map[string]any); ok && vf["secretKeyRef"] != nil {
			t.Errorf("the scanner container has env from a Secret: %v", e)
		}
	}
	limits, _, _ := unstructured.NestedStringMap(scanner, "resources", "limits")
	if limits["cpu"] == "" || limits["memory"] == "" {
		t.Errorf("the scanner container's limits %v: want cpu and memory", limits)
	}
	listen, socket := flag(scanner, "--listen"), flag(manager, "--scanner-socket")
	if listen == "" || listen != socket {
		t.Errorf("scanner --listen=%q, manager --scanner-socket=%q: want the same socket", listen, socket)
	}
	if v := sm[filepath.Dir(listen)]; v == "" || mm[filepath.Dir(socket)] != v {
		t.Errorf("the socket's folder %s: scanner mounts %q, manager %q; want one shared volume", filepath.Dir(listen), v, mm[filepath.Dir(socket)])
	}
	cache := flag(manager, "--cache-dir")
	if sm[cache] == "" || sm[cache] == mm[cache] {
		t.Errorf("cache %s: scanner mounts %q, manager %q; want a volume of the scanner's own at the manager's path", cache, sm[cache], mm[cache])
	}
}

// startScanner runs the scanner binary as its container does, with args and a socket of its own
// (returned), and only PATH and HOME in its environment; it is killed when the test ends, and its
// log is printed if the test failed.
func startScanner(t *testing.T, scanner string, args []string, logPath string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pcscan") // short: a socket path holds at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	socket := filepath.Join(dir, "worker.sock")
	cmd := exec.Command(scanner, append(args, "--listen="+socket)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	logs, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("scanner log:\n%s", data)
		}
	})
	return socket
}

// checkNoCredentialLeak looks for every credential the run planted or the fake Harbor issued
// (registry password, Harbor admin password, robot secrets) in the manager's and the scanner's
// logs, in every Event (core and events.k8s.io), and in every Portcullis object, status included
// (conditions, messages, errors): none may appear.
func checkNoCredentialLeak(t *testing.T, ctx context.Context, c client.Client, cs kubernetes.Interface, logs []string, credentials []string) {
	t.Helper()
	var where []string // "what: text"
	for _, path := range logs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		where = append(where, path+": "+string(data))
	}
	if evs, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{}); err == nil {
		raw, _ := json.Marshal(evs.Items)
		where = append(where, fmt.Sprintf("%d core Events: %s", len(evs.Items), raw))
	} else {
		t.Fatal(err)
	}
	if evs, err := cs.EventsV1().Events("").List(ctx, metav1.ListOptions{}); err == nil {
		raw, _ := json.Marshal(evs.Items)
		where = append(where, fmt.Sprintf("%d events.k8s.io Events: %s", len(evs.Items), raw))
	} else {
		t.Fatal(err)
	}
	for _, list := range []client.ObjectList{&v1alpha1.RegistryList{}, &v1alpha1.RepositoryPolicyList{}, &v1alpha1.ImageAttestationList{}} {
		if err := c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(list)
		where = append(where, fmt.Sprintf("%T: %s", list, raw))
	}
	for _, cred := range credentials {
		if cred == "" {
			continue
		}
		for _, w := range where {
			if strings.Contains(w, cred) {
				what, _, _ := strings.Cut(w, ":")
				t.Errorf("a credential (%d characters) appears in %s", len(cred), what)
			}
		}
	}
}
