package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// seedWorkers is how many images are pushed at once.
const seedWorkers = 8

// repoName is the i-th bench repository, zero-padded so that names sort in order.
func repoName(i, repos int) string {
	width := max(2, len(strconv.Itoa(repos-1)))
	return fmt.Sprintf("bench/repo-%0*d", width, i)
}

// images builds the bench images: image i is a tiny image (no layer, a config of its own with a label
// naming its index) or a full one (one base layer shared by all, random, about 1 KiB, made once,
// plus one random 4 KiB layer of its own). Every digest differs either way.
func images(tiny bool) (func(i int) (v1.Image, error), error) {
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	var shared v1.Layer
	if !tiny {
		var err error
		if shared, err = random.Layer(1024, types.OCILayer); err != nil {
			return nil, err
		}
	}
	return func(i int) (v1.Image, error) {
		cfg := &v1.ConfigFile{
			Architecture: "amd64", OS: "linux",
			RootFS: v1.RootFS{Type: "layers"},
			Config: v1.Config{Labels: map[string]string{"dev.portcullis.bench.index": strconv.Itoa(i)}},
		}
		img, err := mutate.ConfigFile(base, cfg)
		if err != nil || tiny {
			return img, err
		}
		own, err := random.Layer(4096, types.OCILayer)
		if err != nil {
			return nil, err
		}
		return mutate.AppendLayers(img, shared, own)
	}, nil
}

// imageTag is where image i goes: bench/repo-(i mod repos):v(i div repos).
func imageTag(i, repos int) (repo, tag string) {
	return repoName(i%repos, repos), fmt.Sprintf("v%d", i/repos)
}

// seed pushes images 0..n-1 (see images) to the registry at host through the distribution API. One
// Pusher is reused by all pushes, so a blob is checked and uploaded once per repository.
func seed(ctx context.Context, host string, n, repos int, image func(int) (v1.Image, error)) error {
	tr := &http.Transport{Proxy: nil, MaxIdleConns: 4 * seedWorkers, MaxIdleConnsPerHost: 4 * seedWorkers, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	pusher, err := remote.NewPusher(remote.WithContext(ctx), remote.WithTransport(tr), remote.WithJobs(2))
	if err != nil {
		return err
	}
	return seedEach(ctx, n, func(ctx context.Context, i int) error {
		repo, tag := imageTag(i, repos)
		ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", host, repo, tag), name.Insecure)
		if err != nil {
			return err
		}
		img, err := image(i)
		if err != nil {
			return err
		}
		return remote.Write(ref, img, remote.Reuse(pusher), remote.WithContext(ctx))
	})
}

// seedEach calls put for images 0..n-1, seedWorkers at a time, and logs progress every 10 s. It
// stops at the first error.
func seedEach(ctx context.Context, n int, put func(ctx context.Context, i int) error) error {
	var next, done atomic.Int64
	errs := make(chan error, seedWorkers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range seedWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := put(ctx, i); err != nil {
					errs <- fmt.Errorf("image %d: %w", i, err)
					cancel()
					return
				}
				done.Add(1)
			}
		}()
	}
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				logf("seeding: %d of %d images pushed", done.Load(), n)
			}
		}
	}()
	wg.Wait()
	close(stopProgress)
	select {
	case err := <-errs:
		return err
	default:
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// kind is a class of registry request.
type kind int

const (
	kindPing kind = iota
	kindCatalog
	kindTags
	kindManifestHead
	kindManifestGet
	kindBlobGet
	kindBlobHead
	kindReferrers
	kindOther
	numKinds
)

var kindNames = [numKinds]string{"ping /v2/", "catalog", "tags list", "manifest HEAD", "manifest GET", "blob GET", "blob HEAD", "referrers", "other"}

// classify names the kind of a request to the distribution API, and says whether it reads a
// manifest by a cosign tag (sha256-<hex>.sig, .att, .sbom).
func classify(method, path string) (k kind, cosignTag bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	switch {
	case path == "/v2" || path == "/v2/":
		return kindPing, false
	case !ok:
		return kindOther, false
	case rest == "_catalog":
		return kindCatalog, false
	case strings.HasSuffix(rest, "/tags/list"):
		return kindTags, false
	}
	if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
		ref := rest[i+len("/manifests/"):]
		cosign := strings.HasPrefix(ref, "sha256-") &&
			(strings.HasSuffix(ref, ".sig") || strings.HasSuffix(ref, ".att") || strings.HasSuffix(ref, ".sbom"))
		switch method {
		case http.MethodHead:
			return kindManifestHead, cosign
		case http.MethodGet:
			return kindManifestGet, cosign
		}
		return kindOther, cosign
	}
	if strings.Contains(rest, "/referrers/") {
		return kindReferrers, false
	}
	if i := strings.LastIndex(rest, "/blobs/"); i >= 0 && !strings.Contains(rest[i:], "/uploads") {
		switch method {
		case http.MethodGet:
			return kindBlobGet, false
		case http.MethodHead:
			return kindBlobHead, false
		}
	}
	return kindOther, false
}

// counts is a snapshot of the proxy's counters.
type counts struct {
	byKind     [numKinds]int64
	cosignTags int64 // manifest requests by cosign tag, also counted in byKind
	notFound   int64 // 404 answers
	errors     int64 // 5xx answers and failed round trips
}

func (c counts) total() int64 {
	var t int64
	for _, v := range c.byKind {
		t += v
	}
	return t
}

func (c counts) sub(o counts) counts {
	for i := range c.byKind {
		c.byKind[i] -= o.byKind[i]
	}
	c.cosignTags -= o.cosignTags
	c.notFound -= o.notFound
	c.errors -= o.errors
	return c
}

// proxy is a counting reverse proxy on 127.0.0.1 in front of the registry.
type proxy struct {
	url        string
	srv        *http.Server
	byKind     [numKinds]atomic.Int64
	cosignTags atomic.Int64
	notFound   atomic.Int64
	errors     atomic.Int64
}

// startProxy serves a reverse proxy to http://target (a loopback host:port) on a free loopback port.
// The Host header is kept, so Location headers the registry writes point at the proxy.
func startProxy(target string) (*proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{url: "http://" + l.Addr().String()}
	upstream := &url.URL{Scheme: "http", Host: target}
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.Transport = &http.Transport{
		Proxy:               nil, // loopback only, whatever HTTP_PROXY says
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		p.errors.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k, cosign := classify(r.Method, r.URL.Path)
			p.byKind[k].Add(1)
			if cosign {
				p.cosignTags.Add(1)
			}
			rw := &statusWriter{ResponseWriter: w}
			rp.ServeHTTP(rw, r)
			switch {
			case rw.status == http.StatusNotFound:
				p.notFound.Add(1)
			case rw.status >= 500 && rw.status != http.StatusBadGateway:
				p.errors.Add(1)
			}
		}),
		ReadHeaderTimeout: 30 * time.Second,
	}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

func (p *proxy) snapshot() counts {
	var c counts
	for i := range c.byKind {
		c.byKind[i] = p.byKind[i].Load()
	}
	c.cosignTags, c.notFound, c.errors = p.cosignTags.Load(), p.notFound.Load(), p.errors.Load()
	return c
}

func (p *proxy) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
}

// statusWriter records the status code written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the first status code and passes it on.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200 and passes the body on.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets the reverse proxy flush streamed bodies.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
