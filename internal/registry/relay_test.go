package registry

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func startRelay(t *testing.T) *Relay {
	t.Helper()
	r, err := NewRelay(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = r.Serve(ctx) }()
	t.Cleanup(cancel)
	return r
}

// TestRelayReadsThroughTheClient: an image pulled through the relay is the image in the registry
// (digests checked by the reader), every request reaches the registry through the Client (its
// set-up once, its credentials: the reader sends none), and nothing but reads is served.
func TestRelayReadsThroughTheClient(t *testing.T) {
	fs := newFaultServer(t)
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	digest := fs.push(t, "team/app", "v1", img)
	c := fs.client(t)
	relay := startRelay(t)
	pings := fs.count("GET /v2/") // the push's

	ref, err := name.ParseReference(relay.Reference("ns/reg", c, "team/app", digest), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		got, err := remote.Image(ref)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := got.Layers()
		if err != nil || len(layers) != 3 {
			t.Fatalf("layers %d, %v", len(layers), err)
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatalf("reading a layer through the relay: %v", err) // a wrong byte fails the digest check
			}
			rc.Close()
		}
		if d, _ := got.Digest(); d.String() != digest {
			t.Fatalf("digest %s, want %s", d, digest)
		}
	}
	if n := fs.count("GET /v2/") - pings; n != 1 {
		t.Fatalf("%d pings of the registry for two pulls, want the Client's one", n)
	}
	if n := fs.count("GET /v2/team/app/manifests/" + digest); n != 1 {
		t.Fatalf("%d manifest reads for two pulls, want 1 (the second from the Client's manifest cache)", n)
	}

	base := "http://" + relay.Host() + "/v2/"
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "", http.StatusOK},
		{http.MethodGet, "deadbeef/team/app/manifests/" + digest, http.StatusNotFound}, // unknown id
		{http.MethodDelete, ref.Context().RepositoryStr() + "/manifests/" + digest, http.StatusMethodNotAllowed},
		{http.MethodGet, ref.Context().RepositoryStr() + "/manifests/sha256:" + strings.Repeat("0", 64), http.StatusNotFound},
		{http.MethodGet, ref.Context().RepositoryStr() + "/tags/list", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, resp.StatusCode, body, tc.code)
		}
	}

	relay.Forget("ns/reg")
	if _, err := remote.Image(ref); err == nil {
		t.Fatal("a forgotten Registry's references must stop working")
	}
}

// TestRelayFailsAtOnce: a registry that cannot be reached fails the reader's request at once with a
// status it does not retry (go-containerregistry retries 429 and 5xx with backoff), so a scan of an
// unreachable registry never holds a scan slot for long.
func TestRelayFailsAtOnce(t *testing.T) {
	fs := newFaultServer(t)
	c := fs.client(t)
	relay := startRelay(t)
	ref := relay.Reference("ns/gone", c, "app", "sha256:"+strings.Repeat("1", 64))
	fs.Close() // the registry goes away
	path := strings.Replace(strings.TrimPrefix(ref, relay.Host()+"/"), "@", "/manifests/", 1)
	resp, err := http.Get("http://" + relay.Host() + "/v2/" + path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFailedDependency || strings.Contains(string(body), "127.0.0.1") {
		t.Fatalf("%d %s: want 424 with no upstream detail", resp.StatusCode, body)
	}
}

// TestFetchFeedsTheRelay: a manifest the listing fetched (GET by tag) is served to the scanner
// from the Client, with no second request to the registry.
func TestFetchFeedsTheRelay(t *testing.T) {
	fs := newFaultServer(t)
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	digest := fs.push(t, "app", "v1", img)
	c := fs.client(t)
	m, err := c.Fetch(context.Background(), "app", "v1")
	if err != nil || m.Digest != digest {
		t.Fatalf("Fetch = %+v, %v", m, err)
	}
	relay := startRelay(t)
	ref, _ := name.ParseReference(relay.Reference("ns/reg", c, "app", digest), name.Insecure)
	if _, err := remote.Get(ref); err != nil {
		t.Fatal(err)
	}
	if n := fs.count("GET /v2/app/manifests/" + digest); n != 0 {
		t.Fatalf("%d registry reads of a manifest the listing fetched, want 0", n)
	}
}

// TestRelayClosesIdleConnections: readers that each bring their own HTTP transport (trivy makes one per
// image) leave a keep-alive connection each; the relay closes them once idle, so scans do not pile up
// connections, buffers and goroutines in the manager and the scan worker.
func TestRelayClosesIdleConnections(t *testing.T) {
	fs := newFaultServer(t)
	digest := fs.push(t, "team/app", "v1", randomImage(t))
	c := fs.client(t)
	r, err := NewRelay(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	r.srv.IdleTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = r.Serve(ctx) }()
	t.Cleanup(cancel)
	ref, err := name.ParseReference(r.Reference("ns/reg", c, "team/app", digest), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	const scans = 5
	for range scans {
		tr := &http.Transport{} // a new transport per image, as the scanner makes
		if _, err := remote.Get(ref, remote.WithTransport(tr)); err != nil {
			t.Fatal(err)
		}
	}
	if open := r.OpenConnections(); open < scans {
		t.Fatalf("%d connections open right after %d readers with their own transports, want %d", open, scans, scans)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.OpenConnections() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if open := r.OpenConnections(); open != 0 {
		t.Fatalf("%d idle connections still open after the idle timeout", open)
	}
}
