package controller

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// proxy sits between the manager and a real registry: it counts requests by "METHOD kind" and can
// fail the requests whose path contains failPath with failCode, or hold those whose path contains
// slowPath for slowBy.
type proxy struct {
	*httptest.Server
	mu       sync.Mutex
	counts   map[string]int
	failPath string
	failCode int
	slowPath string
	slowBy   time.Duration
	// catalogLast records the `last` parameter of every catalog request.
	catalogLast []string
	// keepTags, when set, rewrites every tags/list answer to the tags it returns (a truncating
	// registry or proxy).
	keepTags func(tags []string) []string
}

func newProxy(t *testing.T, target string) *proxy { return newProxyTB(t, target) }

func newProxyTB(t testing.TB, target string) *proxy {
	u, _ := url.Parse(target)
	p := &proxy{counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[r.Method+" "+kindOfPath(r.URL.Path)]++
		fail := p.failPath != "" && strings.Contains(r.URL.Path, p.failPath)
		code := p.failCode
		slow := p.slowPath != "" && strings.Contains(r.URL.Path, p.slowPath)
		if r.URL.Path == "/v2/_catalog" {
			p.catalogLast = append(p.catalogLast, r.URL.Query().Get("last"))
		}
		slowBy := p.slowBy
		keepTags := p.keepTags
		p.mu.Unlock()
		if keepTags != nil && strings.HasSuffix(r.URL.Path, "/tags/list") {
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			var body struct {
				Name string   `json:"name"`
				Tags []string `json:"tags"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err == nil && rec.Code == http.StatusOK {
				body.Tags = keepTags(body.Tags)
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(body)
				return
			}
		}
		if slow {
			select {
			case <-time.After(slowBy):
			case <-r.Context().Done():
				return
			}
		}
		if fail {
			http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"injected"}]}`, code)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func kindOfPath(p string) string {
	switch {
	case p == "/v2/":
		return "ping"
	case p == "/v2/_catalog":
		return "catalog"
	case strings.HasSuffix(p, "/tags/list"):
		return "tags"
	case strings.Contains(p, "/referrers/"):
		return "referrers"
	case strings.Contains(p, "/manifests/"):
		return "manifest"
	}
	return "other"
}

func (p *proxy) snapshot() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

func (p *proxy) fail(path string, code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failPath, p.failCode = path, code
}

// images returns the namespace's ImageAttestations by "repository@digest".
func images(t *testing.T, ns string) map[string]v1alpha1.ImageAttestation {
	t.Helper()
	list := &v1alpha1.ImageAttestationList{}
	if err := k8sClient.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]v1alpha1.ImageAttestation{}
	for _, ia := range list.Items {
		out[ia.Spec.Repository+"@"+ia.Spec.Digest] = ia
	}
	return out
}

// waitImages waits until the namespace's ImageAttestations are exactly want (repository@digest ->
// comma-joined tags).
func waitImages(t *testing.T, ns string, want map[string]string) map[string]v1alpha1.ImageAttestation {
	t.Helper()
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		got := images(t, ns)
		match := len(got) == len(want)
		for k, tags := range want {
			if ia, ok := got[k]; !ok || strings.Join(ia.Spec.Tags, ",") != tags {
				match = false
			}
		}
		if match {
			return got
		}
		if time.Now().After(deadline) {
			have := map[string]string{}
			for k, ia := range got {
				have[k] = strings.Join(ia.Spec.Tags, ",")
			}
			t.Fatalf("ImageAttestations:\n got %v\nwant %v", have, want)
		}
		time.Sleep(pollInterval)
	}
}

var passes atomic.Int64

// requestPass asks for an immediate pass through the reconcile-request annotation and waits until a
// Registry reconcile has completed after it.
func requestPass(t *testing.T, reg *v1alpha1.Registry) {
	t.Helper()
	before := reconcileCount(t, "registry")
	patchObject(t, reg, func(r *v1alpha1.Registry) {
		if r.Annotations == nil {
			r.Annotations = map[string]string{}
		}
		r.Annotations[ReconcileRequestAnnotation] = time.Now().Format(time.RFC3339Nano) + string(rune('a'+passes.Add(1)%26))
	})
	deadline := time.Now().Add(eventuallyTimeout)
	for reconcileCount(t, "registry") <= before {
		if time.Now().After(deadline) {
			t.Fatal("the reconcile request did not run a pass")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDiscoveryLifecycle runs discovery against a real CNCF Distribution registry: pushes appear,
// re-tags move tags, deletions disappear, a policy change narrows the set, a failing repository keeps
// its images, and an unchanged registry costs no write and one request per repository and tag.
func TestDiscoveryLifecycle(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	px := newProxy(t, dist.URL)

	img1, img2, img3 := registrytest.RandomImage(t), registrytest.RandomImage(t), registrytest.RandomImage(t)
	d1 := dist.Push(t, "team-a/api", "v1", img1)
	dist.Push(t, "team-a/api", "latest", img1)
	d2 := dist.Push(t, "team-a/api", "v2", img2)
	dist.Push(t, "team-a/api", "v3-dev", registrytest.RandomImage(t)) // excluded by the policy's tags
	d3 := dist.Push(t, "team-b/web", "v1", img3)
	dIdx := dist.PushIndex(t, "multi", "v1", registrytest.PlatformIndex(t, "linux/amd64", "linux/arm64/v8"))
	dist.Push(t, "scratch/tmp", "v1", registrytest.RandomImage(t)) // excluded by the Registry

	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
		URL: px.URL, Insecure: true, Interval: &metav1.Duration{Duration: time.Hour},
		Repositories: v1alpha1.RegistryRepositories{PatternSelector: v1alpha1.PatternSelector{Exclude: []string{"scratch/**"}}},
	}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"},
		Tags: v1alpha1.PatternSelector{Exclude: []string{"*-dev"}},
	}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	got := waitImages(t, ns, map[string]string{
		"team-a/api@" + d1: "latest,v1", "team-a/api@" + d2: "v2", "team-b/web@" + d3: "v1", "multi@" + dIdx: "v1",
	})
	waitFor(t, reg, "Ready with counts", func(r *v1alpha1.Registry) bool {
		return isReady(r) && r.Status.RepositoryCount == 3 && r.Status.ImageCount == 4 && r.Status.LastSyncTime != nil
	})
	idx := got["multi@"+dIdx]
	if len(idx.Spec.Platforms) != 2 || idx.Spec.Platforms[1].Platform != "linux/arm64/v8" || !strings.Contains(idx.Spec.MediaType, "index") {
		t.Errorf("index platforms/mediaType not recorded: %+v", idx.Spec)
	}
	for _, ia := range got {
		if errs := validation.IsDNS1123Label(ia.Name); len(errs) > 0 {
			t.Errorf("name %q is not a DNS label: %v", ia.Name, errs)
		}
		if ia.Labels[v1alpha1.RegistryLabel] != "dist" || len(ia.OwnerReferences) != 1 || ia.OwnerReferences[0].Name != "dist" {
			t.Errorf("%s: labels %v owners %v", ia.Name, ia.Labels, ia.OwnerReferences)
		}
	}

	// Re-tag: latest moves to img2. Only tags change, and lastSyncTime moves with them.
	synced := reg.Status.LastSyncTime.DeepCopy()
	time.Sleep(1100 * time.Millisecond) // metav1.Time has second precision
	dist.Push(t, "team-a/api", "latest", img2)
	requestPass(t, reg)
	waitImages(t, ns, map[string]string{
		"team-a/api@" + d1: "v1", "team-a/api@" + d2: "latest,v2", "team-b/web@" + d3: "v1", "multi@" + dIdx: "v1",
	})
	waitFor(t, reg, "lastSyncTime moved", func(r *v1alpha1.Registry) bool { return r.Status.LastSyncTime.After(synced.Time) })

	// A new digest appears in team-b/web.
	d4 := dist.Push(t, "team-b/web", "v2", registrytest.RandomImage(t))
	requestPass(t, reg)
	waitImages(t, ns, map[string]string{
		"team-a/api@" + d1: "v1", "team-a/api@" + d2: "latest,v2", "team-b/web@" + d3: "v1", "team-b/web@" + d4: "v2", "multi@" + dIdx: "v1",
	})

	// Delete: img3's manifest leaves the registry.
	dist.Delete(t, "team-b/web", d3)
	requestPass(t, reg)
	waitImages(t, ns, map[string]string{
		"team-a/api@" + d1: "v1", "team-a/api@" + d2: "latest,v2", "team-b/web@" + d4: "v2", "multi@" + dIdx: "v1",
	})
	waitFor(t, reg, "imageCount 4", func(r *v1alpha1.Registry) bool { return isReady(r) && r.Status.ImageCount == 4 })

	// Steady state: nothing changed, so the pass writes nothing and sends one catalog request, one tags
	// request per governed repository and one HEAD per selected tag.
	time.Sleep(summaryDelay + 500*time.Millisecond) // let the IA and policy controllers settle their own writes
	writesBefore, reqBefore := writeCount(ns), px.snapshot()
	requestPass(t, reg)
	time.Sleep(300 * time.Millisecond)
	reqAfter := px.snapshot()
	delta := func(k string) int { return reqAfter[k] - reqBefore[k] }
	t.Logf("steady-state pass: writes %d, requests %v", writeCount(ns)-writesBefore, map[string]int{
		"catalog": delta("GET catalog"), "tags": delta("GET tags"), "HEAD manifest": delta("HEAD manifest"),
		"GET manifest": delta("GET manifest"), "ping": delta("GET ping")})
	if n := writeCount(ns) - writesBefore; n != 0 {
		t.Errorf("steady-state pass wrote %d times to the API server, want 0", n)
	}
	for k, want := range map[string]int{"GET catalog": 1, "GET tags": 3, "HEAD manifest": 5, "GET manifest": 0, "GET ping": 0} {
		if got := delta(k); got != want {
			t.Errorf("steady-state pass sent %d %q requests, want %d", got, k, want)
		}
	}

	// A failing repository keeps its images; the others are still kept in step.
	px.fail("/v2/team-a/api/tags/list", http.StatusInternalServerError)
	dist.Delete(t, "team-b/web", d4)
	requestPass(t, reg)
	waitImages(t, ns, map[string]string{"team-a/api@" + d1: "v1", "team-a/api@" + d2: "latest,v2", "multi@" + dIdx: "v1"})
	waitFor(t, reg, "Ready=False RegistryUnavailable", func(r *v1alpha1.Registry) bool {
		return hasCondition(r, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.RegistryUnavailableReason)
	})
	px.fail("", 0)

	// A policy that narrows its repositories drops the others' images, with no annotation needed.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Repositories = []string{"team-a/**"} })
	waitImages(t, ns, map[string]string{"team-a/api@" + d1: "v1", "team-a/api@" + d2: "latest,v2"})
	waitFor(t, reg, "Ready again", func(r *v1alpha1.Registry) bool { return isReady(r) && r.Status.ImageCount == 2 })

	// A policy pattern that does not parse would select nothing: the Registry changes nothing and
	// says why, and picks up again once the policy is fixed.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Repositories = []string{"team-[a"} })
	waitFor(t, reg, "Stalled PolicyInvalid", isStalled(v1alpha1.PolicyInvalidReason))
	waitImages(t, ns, map[string]string{"team-a/api@" + d1: "v1", "team-a/api@" + d2: "latest,v2"})
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Repositories = []string{"team-a/**", "multi"} })
	waitImages(t, ns, map[string]string{"team-a/api@" + d1: "v1", "team-a/api@" + d2: "latest,v2", "multi@" + dIdx: "v1"})
	waitFor(t, reg, "Ready after the fix", func(r *v1alpha1.Registry) bool { return isReady(r) && r.Status.ImageCount == 3 })
}

// TestDiscoveryAuthentication runs against Distribution with htpasswd: right credentials list the
// registry; a wrong password gives Ready=False/AuthenticationFailed with the inventory kept and no
// credential in the status; fixing the Secret recovers.
func TestDiscoveryAuthentication(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{Username: "robot", Password: "right-pass"})
	d1 := dist.Push(t, "app", "v1", registrytest.RandomImage(t))

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: ns}, Type: corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "robot", "password": "right-pass"}}
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
		URL: dist.URL, Insecure: true, SecretRef: &v1alpha1.LocalObjectReference{Name: "creds"},
	}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"}}}
	for _, o := range []client.Object{secret, pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitImages(t, ns, map[string]string{"app@" + d1: "v1"})
	waitFor(t, reg, "Ready", isReady)

	patchObject(t, secret, func(s *corev1.Secret) {
		s.Data = map[string][]byte{"username": []byte("robot"), "password": []byte("wrong-pass")}
	})
	waitFor(t, reg, "AuthenticationFailed", func(r *v1alpha1.Registry) bool {
		return hasCondition(r, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.AuthenticationFailedReason)
	})
	for _, c := range reg.Status.Conditions {
		if strings.Contains(c.Message, "wrong-pass") || strings.Contains(c.Message, "right-pass") {
			t.Fatalf("condition %s leaks the password: %q", c.Type, c.Message)
		}
	}
	if got := images(t, ns); len(got) != 1 {
		t.Fatalf("an authentication failure must keep the inventory, have %d images", len(got))
	}

	patchObject(t, secret, func(s *corev1.Secret) {
		s.Data = map[string][]byte{"username": []byte("robot"), "password": []byte("right-pass")}
	})
	waitFor(t, reg, "Ready after the fix", isReady)
}

// TestDiscoveryRecovers: a registry that is down when the Registry is created is RegistryUnavailable
// (transient, not Stalled), and is listed once it comes back, without any change to the Registry; one
// event marks each transition, the recovery included when another failure came between.
func TestDiscoveryRecovers(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	d1 := dist.Push(t, "app", "v1", registrytest.RandomImage(t))
	px := newProxy(t, dist.URL)
	px.fail("/v2/", http.StatusServiceUnavailable)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "flaky", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
		URL: px.URL, Insecure: true, Timeout: &metav1.Duration{Duration: 5 * time.Second}}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "flaky"}, Repositories: []string{"**"}}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, reg, "RegistryUnavailable", func(r *v1alpha1.Registry) bool {
		return hasCondition(r, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.RegistryUnavailableReason) &&
			findCondition(r, v1alpha1.StalledCondition) == nil && hasCondition(r, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.RegistryUnavailableReason)
	})
	down := waitForEvent(t, ns, "flaky", "RegistryUnreachable")
	// On its way back it passes through another failure (a policy pattern that does not parse): the
	// recovery is still announced.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Repositories = []string{"ap[p"} })
	waitFor(t, reg, "Stalled PolicyInvalid", isStalled(v1alpha1.PolicyInvalidReason))
	px.fail("", 0)
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Repositories = []string{"**"} })
	waitImages(t, ns, map[string]string{"app@" + d1: "v1"})
	waitFor(t, reg, "Ready", isReady)
	waitForEvent(t, ns, "flaky", "RegistryRecovered")
	// The backoff retries while it was down were not transitions: one event, no series.
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&down), &down); err != nil {
		t.Fatal(err)
	}
	if down.Series != nil {
		t.Errorf("RegistryUnreachable was emitted on every retry: series %+v", down.Series)
	}
}
