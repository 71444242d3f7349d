package cli

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// authRegistry is go-containerregistry's in-process OCI registry behind HTTP basic auth, recording
// each request's method and path.
type authRegistry struct {
	*httptest.Server
	user, pass string
	mu         sync.Mutex
	requests   []string // "METHOD /v2/..."
	// fail, when set, answers 500 to the requests it picks.
	fail func(*http.Request) bool
}

func newAuthRegistry(t testing.TB) *authRegistry {
	r := &authRegistry{user: "robot", pass: "s3cr3t-pa55"}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, req.Method+" "+req.URL.Path)
		r.mu.Unlock()
		if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"secret detail of the upstream body"}]}`, http.StatusUnauthorized)
			return
		}
		if r.fail != nil && r.fail(req) {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *authRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

// take returns the requests recorded since the last call.
func (r *authRegistry) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.requests
	r.requests = nil
	return out
}

// push writes a deterministic image (its config names it and carries its build time) under tags.
func (r *authRegistry) push(t testing.TB, repo string, daysAgo int, tags ...string) v1.Hash {
	t.Helper()
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Architecture: "amd64", OS: "linux",
		Created: v1.Time{Time: now.AddDate(0, 0, -daysAgo)}, Config: v1.Config{Labels: map[string]string{"name": repo + ":" + tags[0]}}})
	if err != nil {
		t.Fatal(err)
	}
	return r.write(t, repo, img, tags...)
}

func (r *authRegistry) write(t testing.TB, repo string, img v1.Image, tags ...string) v1.Hash {
	t.Helper()
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: r.user, Password: r.pass}))
	for _, tag := range tags {
		ref, err := name.NewTag(r.host()+"/"+repo+":"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, auth); err != nil {
			t.Fatal(err)
		}
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestWhatIfRetention: what-if of a policy with spec.retention lists the governed repository of a
// real (in-process) registry, read-only, and plans it as the manager would: rules, a tag outside the
// policy, a digest a Deployment uses and a signature following its image; compared with the applied
// policy's plan; golden text and JSON. Credentials: the user's keychain (none: a clear error that
// names the remedy and no credential or response body; a docker login: the same plan), the Registry's
// Secret, and --skip-retention (no request).
func TestWhatIfRetention(t *testing.T) {
	c := inventory(t)
	ctx := context.Background()
	reg := newAuthRegistry(t)
	// ops/app: v5 newest ... v1 oldest; v2 also carries "stable" (outside the policy's v* tags); a
	// Deployment runs v3; v1 has a cosign signature; v0 has no build time. ops/other is not governed.
	reg.push(t, "ops/app", 1, "v5")
	reg.push(t, "ops/app", 10, "v4")
	reg.push(t, "ops/app", 20, "v3")
	reg.push(t, "ops/app", 30, "v2", "stable")
	v1d := reg.push(t, "ops/app", 40, "v1")
	sig, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Config: v1.Config{Labels: map[string]string{"signature-of": v1d.String()}}})
	if err != nil {
		t.Fatal(err)
	}
	reg.write(t, "ops/app", sig, "sha256-"+v1d.Hex+".sig")
	reg.write(t, "ops/app", must(mutate.ConfigFile(empty.Image, &v1.ConfigFile{Architecture: "amd64", OS: "linux"})), "v0") // no build time
	reg.push(t, "ops/other", 90, "v1")
	reg.take()

	keepLatest := func(n int32) *v1alpha1.RetentionSpec {
		return &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(n)}}}
	}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ops"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pull", Namespace: "ops"}, Type: corev1.SecretTypeBasicAuth,
			Data: map[string][]byte{"username": []byte(reg.user), "password": []byte(reg.pass)}},
		&v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "local", Namespace: "ops"},
			Spec: v1alpha1.RegistrySpec{URL: reg.URL, Insecure: true, SecretRef: &v1alpha1.LocalObjectReference{Name: "pull"}}},
		&v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "cleanup", Namespace: "ops"}, Spec: v1alpha1.RepositoryPolicySpec{
			RegistryRef: v1alpha1.LocalObjectReference{Name: "local"}, Repositories: []string{"ops/app"},
			Tags: v1alpha1.PatternSelector{Include: []string{"v*"}}, Retention: keepLatest(2)}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "ops"}, Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(0)), Selector: sel,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel.MatchLabels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: reg.host() + "/ops/app:v3"}}}}}},
	}
	for i, repo := range []string{"ops/app", "ops/other"} {
		objs = append(objs, &v1alpha1.ImageAttestation{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ia-%d", i), Namespace: "ops"},
			Spec: v1alpha1.ImageAttestationSpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "local"}, Repository: repo,
				Digest: "sha256:" + strings.Repeat("d", 64), Tags: []string{"v5"}, MediaType: "application/vnd.oci.image.manifest.v1+json"}})
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ia := objs[len(objs)-2].(*v1alpha1.ImageAttestation)
	ia.Status.Policies = []v1alpha1.PolicyResult{{Name: "cleanup", ObservedGeneration: 1, Compliant: true}}
	if err := c.Status().Update(ctx, ia); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "stricter.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: registry.portcullis.dev/v1alpha1
kind: RepositoryPolicy
metadata: {name: cleanup, namespace: ops}
spec:
  registryRef: {name: local}
  repositories: ["ops/app"]
  tags: {include: ["v*"]}
  mode: Enforce
  retention:
    dryRun: false
    rules: [{keepLatest: 1}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// No registry login: refused with the remedy; neither the password nor the registry's body.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	code, out, errOut := run(t, c, "what-if", "-f", file)
	if code != ExitError || !strings.Contains(errOut, "--registry-auth=secret") || strings.Contains(errOut+out, reg.pass) ||
		strings.Contains(errOut, "secret detail") {
		t.Fatalf("what-if without a registry login: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	reg.take()

	// The Registry's own Secret: keepLatest 1 deletes v4 (kept by the applied keepLatest 2), v1 and
	// its signature (deleted by both); v3 (in use), v2 (tagged stable) and v0 (no time) are kept.
	code, out, errOut = run(t, c, "what-if", "-f", file, "--registry-auth=secret")
	if code != ExitChanges {
		t.Fatalf("what-if: exit %d: %s%s", code, out, errOut)
	}
	golden(t, "what-if-retention.txt", out)
	reqs := reg.take()
	for _, r := range reqs {
		if !strings.HasPrefix(r, "GET /v2/") && !strings.HasPrefix(r, "HEAD /v2/") || strings.Contains(r, "ops/other") {
			t.Errorf("what-if may only read the governed repository: %s", r)
		}
	}
	if len(reqs) == 0 || len(reqs) > 22 {
		t.Errorf("what-if made %d registry requests for 7 tags: %v", len(reqs), reqs)
	}
	_, js, _ := run(t, c, "what-if", "-f", file, "--registry-auth=secret", "-o", "json")
	golden(t, "what-if-retention.json", js)

	// The user's own docker login gives the same plan.
	dir := t.TempDir()
	login := base64.StdEncoding.EncodeToString([]byte(reg.user + ":" + reg.pass))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"`+reg.host()+`":{"auth":"`+login+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	if code, again, errOut := run(t, c, "what-if", "-f", file); code != ExitChanges || again != out {
		t.Errorf("what-if with a docker login: exit %d, stderr %q:\n%s", code, errOut, again)
	}

	// The applied policy itself: the same deletions, exit 0; --skip-retention reads no registry.
	same := filepath.Join(t.TempDir(), "same.yaml")
	if err := os.WriteFile(same, []byte(strings.Replace(strings.Replace(string(must(os.ReadFile(file))), "keepLatest: 1", "keepLatest: 2", 1),
		"  mode: Enforce\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run(t, c, "what-if", "-f", same); code != ExitOK || !strings.Contains(out, "2 would be deleted, 5 kept.\nThe applied policy plans 2 deletions (mode Audit: it deletes nothing)") {
		t.Errorf("what-if of the applied retention: exit %d: %s%s", code, out, errOut)
	}
	reg.take()
	if code, out, _ := run(t, c, "what-if", "-f", file, "--skip-retention"); code != ExitOK || !strings.Contains(out, "Retention: not previewed") || len(reg.take()) != 0 {
		t.Errorf("--skip-retention: exit %d, %d requests:\n%s", code, len(reg.take()), out)
	}
	if code, _, errOut := run(t, c, "what-if", "-f", file, "--registry-auth=vault"); code != ExitError || !strings.Contains(errOut, `unknown --registry-auth "vault"`) {
		t.Errorf("--registry-auth=vault: exit %d, %q", code, errOut)
	}
	// --skip-retention needs no Registry; a Harbor Registry is not previewed (Harbor plans itself).
	other := func(registry string) string {
		p := filepath.Join(t.TempDir(), registry+".yaml")
		if err := os.WriteFile(p, []byte(strings.Replace(string(must(os.ReadFile(file))), "{name: local}", "{name: "+registry+"}", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if code, out, errOut := run(t, c, "what-if", "-f", other("nowhere"), "--skip-retention"); code != ExitError || out != "" || !strings.Contains(errOut, `no Registry "nowhere" in namespace "ops"`) {
		t.Errorf("a policy naming no Registry: exit %d: %s%s", code, out, errOut)
	}
	if err := c.Create(ctx, &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "harbor", Namespace: "ops"},
		Spec: v1alpha1.RegistrySpec{URL: "https://harbor.example.com", Provider: v1alpha1.ProviderHarbor}}); err != nil {
		t.Fatal(err)
	}
	// Moving the policy to the Harbor Registry: its image on local would no longer be judged by it,
	// and its retention plan on local would stop (exit 1); Harbor itself is not previewed.
	code, out, errOut = run(t, c, "what-if", "-f", other("harbor"))
	if code != ExitChanges || !strings.Contains(out, "not previewed: Harbor runs retention itself") || len(reg.take()) != 0 ||
		!strings.Contains(out, "and the 2 images of Registry local, where the applied policy is") ||
		!hasRow(out, "ops/app@sha256:dddddddddddd", "v5", "Compliant", "NotSelected") ||
		!strings.Contains(out, "the applied policy plans retention on Registry local; moved, its plan there would stop") {
		t.Errorf("moving the policy to a Harbor Registry: exit %d: %s%s", code, out, errOut)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
