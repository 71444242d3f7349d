package admission

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// warnings collects the API server's warning headers (what kubectl prints).
type warnings struct {
	mu  sync.Mutex
	got []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.got
	w.got = nil
	return out
}

// countingRegistry is go-containerregistry's in-process registry, counting manifest requests.
type countingRegistry struct {
	*httptest.Server
	manifests atomic.Int64
}

func startRegistry(t testing.TB) *countingRegistry {
	r := &countingRegistry{}
	h := ggcrregistry.New()
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/manifests/") {
			r.manifests.Add(1)
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *countingRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

// push writes a random image at repo:tag and returns its digest.
func (r *countingRegistry) push(t testing.TB, repo, tag string) string {
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(r.host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// fixture is a running envtest API server that calls the webhook over TLS, with the inventory
// (Registry, policies, ImageAttestations) kept in namespace inv and workloads applied elsewhere.
type fixture struct {
	c        client.Client // as the cluster admin (system:masters), warnings collected
	warn     *warnings
	cfg      *rest.Config
	reg      *countingRegistry
	inv      string
	stop     context.CancelFunc
	stopped  chan struct{}
	resolves atomic.Int64
	handled  atomic.Int64 // requests the API server sent the webhook server
	// evaluate, when set, stands for controller.Wiring.Evaluate; evaluations counts its calls.
	evaluate    atomic.Pointer[Evaluator]
	evaluations atomic.Int64
}

// countingServer counts the requests to every handler registered on it.
type countingServer struct {
	webhook.Server
	n *atomic.Int64
}

func (s countingServer) Register(path string, h http.Handler) {
	s.Server.Register(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.n.Add(1)
		h.ServeHTTP(w, r)
	}))
}

func startFixture(t *testing.T) *fixture {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, or export KUBEBUILDER_ASSETS=\"$(hack/envtest-assets.sh)\"")
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join("..", "..", "config", "webhook", "manifests.yaml")}},
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	wo := env.WebhookInstallOptions
	f := &fixture{warn: &warnings{}, cfg: cfg, reg: startRegistry(t), inv: "inventory", stopped: make(chan struct{})}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		WebhookServer: countingServer{webhook.NewServer(webhook.Options{Host: wo.LocalServingHost, Port: wo.LocalServingPort, CertDir: wo.LocalServingCertDir}), &f.handled},
	})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := registry.New(registry.Config{URL: f.reg.URL, Insecure: true, MetricsName: "test/admission"})
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(ctx context.Context, reg *v1alpha1.Registry, repo, tag string) (string, error) {
		f.resolves.Add(1)
		m, err := rc.Resolve(ctx, repo, tag)
		return m.Digest, err
	}
	evaluate := func(ctx context.Context, reg *v1alpha1.Registry, repo, tag, digest string) (string, error) {
		f.evaluations.Add(1)
		if e := f.evaluate.Load(); e != nil {
			return (*e)(ctx, reg, repo, tag, digest)
		}
		return "", errors.New("no on-demand evaluation in this test")
	}
	if err := Setup(mgr, Options{Resolve: resolve, Exempt: []string{"portcullis-system"}, Evaluate: evaluate}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	go func() {
		defer close(f.stopped)
		if err := mgr.Start(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { f.stop(); <-f.stopped })
	wcfg := rest.CopyConfig(cfg)
	wcfg.WarningHandler = f.warn
	if f.c, err = client.New(wcfg, client.Options{Scheme: scheme}); err != nil {
		t.Fatal(err)
	}
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	f.namespace(t, f.inv, false)
	return f
}

func (f *fixture) namespace(t *testing.T, ns string, optIn bool) {
	o := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if optIn {
		o.Labels = map[string]string{NamespaceLabel: "enabled"}
	}
	if err := f.c.Create(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) create(t *testing.T, o client.Object) {
	t.Helper()
	if err := f.c.Create(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

// attest writes digest's ImageAttestation with the policies' results, as the controllers would.
func (f *fixture) attest(t *testing.T, repo, digest string, tags []string, results ...v1alpha1.PolicyResult) string {
	t.Helper()
	ia := &v1alpha1.ImageAttestation{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.inv, Name: v1alpha1.ImageAttestationName("reg", repo, digest)},
		Spec: v1alpha1.ImageAttestationSpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "reg"}, Repository: repo,
			Digest: digest, Tags: tags},
	}
	f.create(t, ia)
	ia.Status.Policies = results
	if err := f.c.Status().Update(context.Background(), ia); err != nil {
		t.Fatal(err)
	}
	return ia.Name
}

func deployment(ns, name string, images ...string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	var cs []corev1.Container
	for i, img := range images {
		cs = append(cs, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: cs}}},
	}
}

func pod(ns, name string, images ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for i, img := range images {
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: fmt.Sprintf("init%d", i), Image: img})
	}
	p.Spec.Containers = []corev1.Container{{Name: "main", Image: "busybox.example/tools/sh:1"}}
	return p
}

// refused asserts err is the webhook's denial carrying every want.
func refused(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil || !apierrors.IsForbidden(err) {
		t.Fatalf("want a refusal, got %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q lacks %q", err.Error(), w)
		}
	}
}

// events returns the notes of events with reason in ns.
func (f *fixture) events(t *testing.T, ns, reason string) []string {
	t.Helper()
	var out []string
	for range 50 { // the recorder writes asynchronously
		list := &eventsv1.EventList{}
		if err := f.c.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		out = nil
		for _, e := range list.Items {
			if e.Reason == reason {
				out = append(out, e.Regarding.Kind+"/"+e.Regarding.Name+": "+e.Note)
			}
		}
		if len(out) > 0 {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

func TestWebhook(t *testing.T) {
	f := startFixture(t)
	ctx := context.Background()
	host := f.reg.host()
	f.create(t, &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Namespace: f.inv, Name: "reg"},
		Spec: v1alpha1.RegistrySpec{URL: f.reg.URL, Insecure: true}})
	prod := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.inv, Name: "prod"},
		Spec: v1alpha1.RepositoryPolicySpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "reg"}, Repositories: []string{"shop/**"},
			Mode: v1alpha1.ModeEnforce}}
	audit := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: f.inv, Name: "audit"},
		Spec: v1alpha1.RepositoryPolicySpec{RegistryRef: v1alpha1.LocalObjectReference{Name: "reg"}, Repositories: []string{"labs/**"},
			Mode: v1alpha1.ModeAudit}}
	f.create(t, prod)
	f.create(t, audit)
	result := func(p *v1alpha1.RepositoryPolicy, reasons ...string) v1alpha1.PolicyResult {
		return v1alpha1.PolicyResult{Name: p.Name, ObservedGeneration: p.Generation, Compliant: len(reasons) == 0, Reasons: reasons}
	}
	good := f.reg.push(t, "shop/api", "v1")
	f.attest(t, "shop/api", good, []string{"v1"}, result(prod))
	bad := f.reg.push(t, "shop/api", "v2")
	badIA := f.attest(t, "shop/api", bad, []string{"v2"}, result(prod, "SignatureMissing", "VulnerabilityThresholdExceeded"))
	unscanned := f.reg.push(t, "shop/api", "v3")
	f.attest(t, "shop/api", unscanned, []string{"v3"}, result(prod, "NotScanned"))
	labs := f.reg.push(t, "labs/tool", "v1")
	f.attest(t, "labs/tool", labs, []string{"v1"}, result(audit, "SignatureMissing"))
	pushedLater := f.reg.push(t, "shop/api", "v4") // in the registry, not in the inventory

	apps := "apps"
	f.namespace(t, apps, true)
	f.namespace(t, "elsewhere", false)
	waitForCache(t, f, host)

	t.Run("compliant Deployment and Pod are admitted without a registry request", func(t *testing.T) {
		before := f.reg.manifests.Load()
		f.create(t, deployment(apps, "good", host+"/shop/api:v1"))
		f.create(t, pod(apps, "good", host+"/shop/api@"+good))
		if n := f.reg.manifests.Load() - before; n != 0 {
			t.Fatalf("%d registry requests for inventory hits, want 0", n)
		}
	})
	t.Run("non-compliant under Enforce is refused with every reason", func(t *testing.T) {
		err := f.c.Create(ctx, deployment(apps, "bad", host+"/shop/api:v1", host+"/shop/api:v2"))
		refused(t, err, host+"/shop/api:v2", bad, "RepositoryPolicy inventory/prod (Enforce)", "SignatureMissing, VulnerabilityThresholdExceeded",
			"kubectl describe imageattestation -n inventory "+badIA)
		if strings.Contains(err.Error(), "shop/api:v1\"") {
			t.Errorf("the compliant image is named in the refusal: %v", err)
		}
		if ev := f.events(t, apps, "ImageRefused"); len(ev) == 0 || !strings.HasPrefix(ev[0], "Deployment/bad: ") {
			t.Fatalf("refusal events %q, want one on Deployment/bad", ev)
		}
	})
	t.Run("not yet scanned is refused under Enforce", func(t *testing.T) {
		refused(t, f.c.Create(ctx, pod(apps, "unscanned", host+"/shop/api:v3")), "NotScanned")
	})
	t.Run("a tag the inventory does not know costs one HEAD and is refused as not evaluated", func(t *testing.T) {
		before, resolves := f.reg.manifests.Load(), f.resolves.Load()
		refused(t, f.c.Create(ctx, deployment(apps, "later", host+"/shop/api:v4")), "NotEvaluated", pushedLater)
		if n, r := f.reg.manifests.Load()-before, f.resolves.Load()-resolves; n != 1 || r != 1 {
			t.Fatalf("%d manifest requests in %d resolves, want 1 HEAD", n, r)
		}
		refused(t, f.c.Create(ctx, deployment(apps, "missing", host+"/shop/api:nope")), "TagNotResolved")
	})
	t.Run("Audit admits with a warning", func(t *testing.T) {
		f.warn.take()
		f.create(t, deployment(apps, "labs", host+"/labs/tool:v1"))
		w := strings.Join(f.warn.take(), "\n")
		if !strings.Contains(w, "RepositoryPolicy inventory/audit (Audit): SignatureMissing") {
			t.Fatalf("warnings %q", w)
		}
	})
	t.Run("images of hosts no Registry covers are admitted", func(t *testing.T) {
		f.create(t, deployment(apps, "uncovered", "quay.example/other/image:1"))
	})
	t.Run("namespaces that did not opt in are not judged", func(t *testing.T) {
		f.create(t, deployment("elsewhere", "bad", host+"/shop/api:v2"))
	})
	t.Run("a dry run is judged and records nothing", func(t *testing.T) {
		before := len(f.events(t, apps, "ImageRefused"))
		refused(t, f.c.Create(ctx, deployment(apps, "dry", host+"/shop/api:v2"), client.DryRunAll), "SignatureMissing")
		time.Sleep(500 * time.Millisecond)
		if after := len(f.events(t, apps, "ImageRefused")); after != before {
			t.Fatalf("a dry run recorded %d events", after-before)
		}
	})
	t.Run("break-glass needs the RBAC verb and is recorded", func(t *testing.T) {
		dev := impersonated(t, f, apps, "dev")
		d := deployment(apps, "glass", host+"/shop/api:v2")
		d.Annotations = map[string]string{BreakGlassAnnotation: "INC-42 hotfix"}
		refused(t, dev.Create(ctx, d.DeepCopy()), "SignatureMissing")
		f.create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "break-glass"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"repositorypolicies"}, Verbs: []string{BreakGlassVerb}}}})
		f.create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "dev-break-glass"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "break-glass"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: "dev", APIGroup: "rbac.authorization.k8s.io"}}})
		if err := dev.Create(ctx, d.DeepCopy()); err != nil {
			t.Fatalf("break-glass with the verb: %v", err)
		}
		if ev := f.events(t, apps, "BreakGlass"); len(ev) == 0 || !strings.Contains(ev[0], "INC-42 hotfix") || !strings.Contains(ev[0], "dev") {
			t.Fatalf("break-glass events %q", ev)
		}
		// An update that keeps the images (a label) is not judged again; one that adds a bad image is.
		cur := &appsv1.Deployment{}
		if err := f.c.Get(ctx, client.ObjectKeyFromObject(d), cur); err != nil {
			t.Fatal(err)
		}
		cur.Annotations = nil
		cur.Labels = map[string]string{"team": "shop"}
		if err := f.c.Update(ctx, cur); err != nil {
			t.Fatalf("an update keeping the images: %v", err)
		}
		cur.Spec.Template.Spec.Containers = append(cur.Spec.Template.Spec.Containers, corev1.Container{Name: "c9", Image: host + "/shop/api:v3"})
		refused(t, f.c.Update(ctx, cur), "NotScanned")
	})
	t.Run("a policy change makes its older verdicts not evaluated", func(t *testing.T) {
		cur := &v1alpha1.RepositoryPolicy{}
		if err := f.c.Get(ctx, client.ObjectKeyFromObject(prod), cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Tags.Exclude = []string{"never"}
		if err := f.c.Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := f.c.Create(ctx, pod(apps, "regen", host+"/shop/api:v1"), client.DryRunAll)
			if err != nil && strings.Contains(err.Error(), "NotEvaluated") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a verdict of generation 1 still admits under generation 2: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("with OLM's namespaceSelector (none), the handler itself judges only opted-in namespaces", func(t *testing.T) {
		// OLM replaces a webhook's namespaceSelector with its OperatorGroup's: for AllNamespaces,
		// every namespace. Remove ours as OLM would; the handler's own label check must hold.
		vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := f.c.Get(ctx, client.ObjectKey{Name: "validating-webhook-configuration"}, vwc); err != nil {
			t.Fatal(err)
		}
		shipped := vwc.Webhooks[0].NamespaceSelector
		vwc.Webhooks[0].NamespaceSelector = &metav1.LabelSelector{}
		if err := f.c.Update(ctx, vwc); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := f.c.Get(ctx, client.ObjectKey{Name: vwc.Name}, vwc); err != nil {
				t.Fatal(err)
			}
			vwc.Webhooks[0].NamespaceSelector = shipped
			if err := f.c.Update(ctx, vwc); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second) // the API server's view of webhook configurations lags a moment
		}()
		before := f.handled.Load()
		deadline := time.Now().Add(10 * time.Second)
		for f.handled.Load() == before { // until the API server calls the webhook for "elsewhere"
			if time.Now().After(deadline) {
				t.Fatal("the API server never called the webhook for a namespace outside the shipped selector")
			}
			_ = f.c.Create(ctx, deployment("elsewhere", "probe", host+"/shop/api:v2"), client.DryRunAll)
			time.Sleep(100 * time.Millisecond)
		}
		f.create(t, deployment("elsewhere", "olm-bad", host+"/shop/api:v2"))
		f.create(t, deployment("kube-system", "olm-bad", host+"/shop/api:v2"))
		refused(t, f.c.Create(ctx, deployment(apps, "olm-bad", host+"/shop/api:v2")), "RepositoryPolicy inventory/prod (Enforce)")
		// A namespace created a moment ago may not be in the cache yet: it is read from the API.
		f.namespace(t, "fresh", true)
		refused(t, f.c.Create(ctx, deployment("fresh", "olm-bad", host+"/shop/api:v2")), "RepositoryPolicy inventory/prod (Enforce)")
	})
	t.Run("a webhook that is down fails closed only in opted-in namespaces", func(t *testing.T) {
		f.stop()
		<-f.stopped
		err := f.c.Create(ctx, deployment(apps, "down", host+"/shop/api:v1"))
		if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Fatalf("with the webhook down: %v, want the failurePolicy's refusal", err)
		}
		f.create(t, deployment("elsewhere", "down", host+"/shop/api:v1"))
	})
}

// waitForCache waits until the manager's cache has the inventory (the webhook reads only it).
func waitForCache(t *testing.T, f *fixture, host string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f.c.Create(context.Background(), pod("apps", "probe", host+"/shop/api:v1"), client.DryRunAll)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook never admitted a compliant image: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// impersonated is a client acting as user, allowed to create Deployments in ns.
func impersonated(t *testing.T, f *fixture, ns, user string) client.Client {
	t.Helper()
	f.create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-deploy"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"create", "get", "update"}}}})
	f.create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-deploy"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: user + "-deploy"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: user, APIGroup: "rbac.authorization.k8s.io"}}})
	cfg := rest.CopyConfig(f.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: f.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
