package registry

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// faultServer is go-containerregistry's in-process registry behind a handler that can answer some
// requests itself (to inject faults) and counts every request by method and path.
type faultServer struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
	fault  func(w http.ResponseWriter, r *http.Request) bool // true: handled
}

func newFaultServer(t *testing.T) *faultServer {
	t.Helper()
	fs := &faultServer{counts: map[string]int{}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		fs.counts[r.Method+" "+r.URL.Path]++
		fault := fs.fault
		fs.mu.Unlock()
		if fault != nil && fault(w, r) {
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *faultServer) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.fault = f
}

func (fs *faultServer) count(methodPath string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.counts[methodPath]
}

func (fs *faultServer) host() string { u, _ := url.Parse(fs.URL); return u.Host }

// push writes img to repo:tag on the server and returns its digest.
func (fs *faultServer) push(t *testing.T, repo, tag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(fs.host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

func (fs *faultServer) client(t *testing.T, mutate ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: fs.URL, Insecure: true, MetricsName: "test/" + t.Name(), RetryBase: time.Millisecond, MaxRetryWait: 5 * time.Second}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestListResolveAndIndex(t *testing.T) {
	fs := newFaultServer(t)
	img1, img2 := randomImage(t), randomImage(t)
	d1 := fs.push(t, "team-a/api", "v1", img1)
	fs.push(t, "team-a/api", "latest", img1)
	d2 := fs.push(t, "team-a/api", "v2", img2)
	idx := mutate.AppendManifests(emptyIndex(), mutate.IndexAddendum{Add: randomImage(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: randomImage(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}})
	ref, _ := name.ParseReference(fs.host()+"/multi:v1", name.Insecure)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()

	c := fs.client(t)
	ctx := context.Background()
	repos, err := c.Repositories(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(repos)
	if strings.Join(repos, ",") != "multi,team-a/api" {
		t.Fatalf("Repositories = %v", repos)
	}
	tags, err := c.Tags(ctx, "team-a/api")
	if err != nil || strings.Join(tags, ",") != "latest,v1,v2" {
		t.Fatalf("Tags = %v, %v", tags, err)
	}
	for tag, want := range map[string]string{"v1": d1, "latest": d1, "v2": d2} {
		m, err := c.Resolve(ctx, "team-a/api", tag)
		if err != nil || m.Digest != want || m.IsIndex() {
			t.Errorf("Resolve(%s) = %+v, %v; want %s", tag, m, err, want)
		}
	}
	m, err := c.Resolve(ctx, "multi", "v1")
	if err != nil || m.Digest != idxDigest.String() || !m.IsIndex() {
		t.Fatalf("Resolve(multi:v1) = %+v, %v", m, err)
	}
	plats, err := c.Platforms(ctx, "multi", m.Digest)
	if err != nil || len(plats) != 2 || plats[0].Platform != "linux/amd64" || plats[1].Platform != "linux/arm64/v8" {
		t.Fatalf("Platforms = %+v, %v", plats, err)
	}
	if _, err := c.Tags(ctx, "no/such"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Tags of a missing repository: %v, want ErrNotFound", err)
	}
	if _, err := c.Resolve(ctx, "team-a/api", "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Resolve of a missing tag: %v, want ErrNotFound", err)
	}
	if got := testutil.ToFloat64(requestsTotal.WithLabelValues("test/"+t.Name(), "manifest", "200")); got < 5 {
		t.Fatalf("request counter for manifests = %v, want >= 5", got)
	}
	// The registry is plain http: go-containerregistry's https attempt before it is not an error.
	if got := testutil.ToFloat64(requestsTotal.WithLabelValues("test/"+t.Name(), "ping", "error")); got != 0 {
		t.Fatalf("pings of a healthy plain-http registry counted as errors: %v", got)
	}
	if got := testutil.ToFloat64(requestsTotal.WithLabelValues("test/"+t.Name(), "ping", "200")); got < 1 {
		t.Fatalf("ping counter = %v, want >= 1", got)
	}
	if fs.count("GET /v2/team-a/api/manifests/v1") != 0 {
		t.Fatal("a HEAD that gave the digest must not be followed by a GET")
	}
}

// TestHeadWithoutDigestFallsBackToGet: a registry that omits Docker-Content-Digest on HEAD is
// resolved by GET, and the digest is computed from the body.
func TestHeadWithoutDigestFallsBackToGet(t *testing.T) {
	fs := newFaultServer(t)
	d := fs.push(t, "app", "v1", randomImage(t))
	fs.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusOK)
			return true
		}
		return false
	})
	m, err := fs.client(t).Resolve(context.Background(), "app", "v1")
	if err != nil || m.Digest != d {
		t.Fatalf("Resolve = %+v, %v; want %s", m, err, d)
	}
	if fs.count("GET /v2/app/manifests/v1") != 1 {
		t.Fatalf("want exactly one GET fallback, got %d", fs.count("GET /v2/app/manifests/v1"))
	}
}

func emptyIndex() v1.ImageIndex {
	return mutate.IndexMediaType(emptyIndexBase, "application/vnd.oci.image.index.v1+json")
}

var emptyIndexBase = func() v1.ImageIndex {
	idx, _ := random.Index(0, 0, 0)
	return idx
}()
