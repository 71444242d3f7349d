package controller

import (
	"context"
	"encoding/json"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// harborFixture is a fake Harbor (held to its swagger) in front of a real Distribution, with
// project team-a, and a Registry of provider Harbor for it in a new namespace.
type harborFixture struct {
	ns   string
	h    *harbortest.Server
	dist *registrytest.Distribution
	reg  *v1alpha1.Registry
}

func newHarborFixture(t *testing.T) *harborFixture {
	t.Helper()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	h := harbortest.Start(t)
	u, _ := url.Parse(dist.URL)
	h.Mu.Lock()
	h.V2 = httputil.NewSingleHostReverseProxy(u)
	h.Users["alice"], h.Users["bob"], h.Users["carol"], h.Groups["devs"] = true, true, true, true
	h.Mu.Unlock()
	h.AddProject("team-a", map[string]string{"auto_scan": "false"})
	if err := k8sClient.Create(context.Background(), basicAuthSecret(ns, "harbor-admin", h.Username, h.Password)); err != nil {
		t.Fatal(err)
	}
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "harbor", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
		URL: h.URL, Insecure: true, Provider: v1alpha1.ProviderHarbor, SecretRef: &v1alpha1.LocalObjectReference{Name: "harbor-admin"}}}
	if err := k8sClient.Create(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	return &harborFixture{ns: ns, h: h, dist: dist, reg: reg}
}

// writes counts the requests that change Harbor.
func (f *harborFixture) writes() int {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	n := 0
	for k, v := range f.h.Requests {
		if !strings.HasPrefix(k, "GET ") {
			n += v
		}
	}
	return n
}

func (f *harborFixture) reads(path string) int {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	return f.h.Requests["GET "+path]
}

func (f *harborFixture) members() map[string]int64 {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	out := map[string]int64{}
	for _, m := range f.h.Projects["team-a"].Members {
		out[m.Kind+":"+m.Name] = m.RoleID
	}
	return out
}

func (f *harborFixture) robot(name string) *harbortest.Robot {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	for _, r := range f.h.Robots {
		if r.Name == name {
			c := *r
			return &c
		}
	}
	return nil
}

func (f *harborFixture) rules() []string {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	var out []string
	for _, r := range f.h.Projects["team-a"].ImmutableRules {
		raw, _ := json.Marshal(r)
		var rule struct {
			TagSelectors []struct{ Pattern string } `json:"tag_selectors"`
		}
		_ = json.Unmarshal(raw, &rule)
		out = append(out, rule.TagSelectors[0].Pattern)
	}
	slices.Sort(out)
	return out
}

// enforced waits until the policy's current generation has been compared with Harbor.
func enforced(p *v1alpha1.RepositoryPolicy) bool {
	e := p.Status.Enforcement
	return e != nil && e.ObservedGeneration == p.Generation
}

// kick touches the robot Secret so the Harbor controller runs a pass now, and waits for it (a new
// read of the project).
func (f *harborFixture) kick(t *testing.T, secretName string) {
	t.Helper()
	before := f.reads("/api/v2.0/projects/team-a")
	s := &corev1.Secret{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: secretName}, s); err != nil {
		t.Fatal(err)
	}
	patchObject(t, s, func(s *corev1.Secret) { s.Labels["kick"] = strconv.FormatInt(time.Now().UnixNano(), 10) })
	deadline := time.Now().Add(eventuallyTimeout)
	for f.reads("/api/v2.0/projects/team-a") == before {
		if time.Now().After(deadline) {
			t.Fatal("no Harbor pass after touching the robot Secret")
		}
		time.Sleep(pollInterval)
	}
	time.Sleep(500 * time.Millisecond) // let the pass finish its writes
}

func robotCreds(t *testing.T, ns, name string) (user, pass, id string) {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	if s.Type != corev1.SecretTypeDockerConfigJson {
		t.Fatalf("Secret %s has type %s", name, s.Type)
	}
	var cfg struct {
		Auths map[string]struct{ Username, Password, Auth string }
	}
	if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil || len(cfg.Auths) != 1 {
		t.Fatalf("Secret %s: %s (%v)", name, s.Data[corev1.DockerConfigJsonKey], err)
	}
	for _, a := range cfg.Auths {
		return a.Username, a.Password, s.Annotations[v1alpha1.RobotIDAnnotation]
	}
	return
}

// assertNoSecretLeak checks that no robot secret the fake issued appears in the policy (status
// included) or in any event of the namespace.
func (f *harborFixture) assertNoSecretLeak(t *testing.T, pol *v1alpha1.RepositoryPolicy) {
	t.Helper()
	raw, _ := json.Marshal(pol)
	list := &eventsv1.EventList{}
	if err := k8sClient.List(context.Background(), list, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		raw = append(raw, e.Note...)
	}
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	for _, r := range f.h.Robots {
		if strings.Contains(string(raw), r.Secret) {
			t.Errorf("the secret of robot %s appears in the policy or an event", r.Name)
		}
	}
}

func changeNames(st *v1alpha1.EnforcementStatus) []string {
	var out []string
	for _, c := range st.Changes {
		out = append(out, c.Action+" "+c.Kind+" "+c.Name)
	}
	return out
}
