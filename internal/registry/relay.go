package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// Relay lets the scanner read images through the Registry's Client: it serves, on a loopback port,
// the part of the distribution API an image pull needs (`GET /v2/`, `GET`/`HEAD` of
// `/v2/<id>/<name>/manifests/<reference>`, `GET /v2/<id>/<name>/blobs/<digest>`) and answers each
// request by fetching from the registry that id stands for, through its Client. So every manifest
// and blob the scanner downloads counts against that Registry's rate limit and request counter,
// uses its credentials, connections, bearer tokens and CA, and the scanner process is given no
// credential at all: only a reference on the relay, with no auth.
//
// An id is a random token made when a Client is registered; requests for an unknown id are 404. The
// relay is plain http on 127.0.0.1 and accepts nothing but GET and HEAD.
type Relay struct {
	maxBlob int64
	ln      net.Listener
	srv     *http.Server
	conns   atomic.Int64 // open connections

	mu      sync.Mutex
	clients map[string]*Client // id -> client
	ids     map[string]string  // owner key (namespace/name) -> id
}

// NewRelay listens on a free 127.0.0.1 port. maxBlob bounds one blob (bytes; 0: no bound): the
// scanner's image size limit.
func NewRelay(maxBlob int64) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting the registry relay: %w", err)
	}
	r := &Relay{maxBlob: maxBlob, ln: ln, clients: map[string]*Client{}, ids: map[string]string{}}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: relayIdleTimeout,
		ConnState: func(_ net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				r.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				r.conns.Add(-1)
			}
		}}
	return r, nil
}

// relayIdleTimeout closes a relay connection idle this long. The scanner (trivy) makes a new HTTP
// transport for each image, so without it every scan would leave an idle keep-alive connection, its
// buffers and goroutine open on both sides for good (3,000 of them, 30 MiB, after 3,000 scans).
const relayIdleTimeout = 5 * time.Second

// OpenConnections is how many connections to the relay are open now.
func (r *Relay) OpenConnections() int64 { return r.conns.Load() }

// Serve answers requests until ctx ends.
func (r *Relay) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.srv.Shutdown(shut)
	}()
	if err := r.srv.Serve(r.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Host is the relay's host:port.
func (r *Relay) Host() string { return r.ln.Addr().String() }

// Reference is where the scanner reads repository@digest of the registry owner (the Registry's
// namespace/name) stands for, through c: `127.0.0.1:PORT/<id>/<repository>@<digest>`, plain http.
// A new Client for the same owner (its configuration changed) takes over the owner's id.
func (r *Relay) Reference(owner string, c *Client, repository, digest string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.ids[owner]
	if !ok {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		id = hex.EncodeToString(b)
		r.ids[owner] = id
	}
	r.clients[id] = c
	return r.Host() + "/" + id + "/" + repository + "@" + digest
}

// Forget drops the owner's id: its references stop working.
func (r *Relay) Forget(owner string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.clients, r.ids[owner])
	delete(r.ids, owner)
}

// ServeHTTP implements the relay's API (see Relay).
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		relayError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "the relay only reads")
		return
	}
	if req.URL.Path == "/v2/" || req.URL.Path == "/v2" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
		return
	}
	id, repo, kind, ref, ok := parseRelayPath(req.URL.Path)
	if !ok {
		relayError(w, http.StatusNotFound, "NAME_UNKNOWN", "not a manifest or blob path")
		return
	}
	r.mu.Lock()
	c := r.clients[id]
	r.mu.Unlock()
	if c == nil {
		relayError(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown registry")
		return
	}
	switch kind {
	case "manifests":
		r.manifest(w, req, c, repo, ref)
	default:
		r.blob(w, req, c, repo, ref)
	}
}

// parseRelayPath splits /v2/<id>/<name...>/(manifests|blobs)/<reference>.
func parseRelayPath(p string) (id, repo, kind, ref string, ok bool) {
	rest, found := strings.CutPrefix(p, "/v2/")
	if !found {
		return "", "", "", "", false
	}
	id, rest, found = strings.Cut(rest, "/")
	if !found || id == "" {
		return "", "", "", "", false
	}
	for _, k := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(rest, k); i > 0 {
			repo, ref = rest[:i], rest[i+len(k):]
			return id, repo, strings.Trim(k, "/"), ref, ref != "" && !strings.Contains(ref, "/")
		}
	}
	return "", "", "", "", false
}

func (r *Relay) manifest(w http.ResponseWriter, req *http.Request, c *Client, repo, reference string) {
	sep := ":"
	if strings.Contains(reference, ":") {
		sep = "@"
		if v, ok := c.manifests.Get(reference); ok { // fetched by the listing moments ago
			m := v.(cachedManifest)
			writeManifest(w, req, m.body, m.mediaType, reference)
			return
		}
	}
	nref, err := c.ref(repo, sep+reference)
	if err != nil {
		relayError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "bad reference")
		return
	}
	p, done, err := c.pull()
	if err != nil {
		relayFailure(w, err)
		return
	}
	desc, err := p.Get(req.Context(), nref)
	err = done(classify("reading a manifest for the scanner", err))
	if err != nil {
		relayFailure(w, err)
		return
	}
	if sep == "@" {
		// The scanner may read it again (a descriptor, then the image): once from the registry.
		c.manifests.Add(desc.Digest.String(), cachedManifest{body: desc.Manifest, mediaType: string(desc.MediaType)})
	}
	writeManifest(w, req, desc.Manifest, string(desc.MediaType), desc.Digest.String())
}

func writeManifest(w http.ResponseWriter, req *http.Request, body []byte, mediaType, digest string) {
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Docker-Content-Digest", digest)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func (r *Relay) blob(w http.ResponseWriter, req *http.Request, c *Client, repo, digest string) {
	if req.Method != http.MethodGet {
		relayError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "blobs are only read")
		return
	}
	repository, err := c.repo(repo)
	if err != nil {
		relayError(w, http.StatusNotFound, "BLOB_UNKNOWN", "bad repository")
		return
	}
	dref, err := name.NewDigest(repository.Name()+"@"+digest, c.nameOpts...)
	if err != nil {
		relayError(w, http.StatusNotFound, "BLOB_UNKNOWN", "bad digest")
		return
	}
	p, done, err := c.pull()
	if err != nil {
		relayFailure(w, err)
		return
	}
	layer, err := p.Layer(context.WithValue(req.Context(), relayBlob{}, true), dref)
	if err == nil {
		var rc io.ReadCloser
		if rc, err = layer.Compressed(); err == nil {
			defer rc.Close()
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Docker-Content-Digest", digest)
			var src io.Reader = rc
			if r.maxBlob > 0 {
				src = io.LimitReader(rc, r.maxBlob)
			}
			_, _ = io.Copy(w, src) // the scanner checks the digest of what it reads
			_ = done(nil)
			return
		}
	}
	relayFailure(w, done(classify("reading a blob for the scanner", err)))
}

// relayFailure answers a registry failure with its kind only, never the upstream body. Anything but
// a 404 is 424 Failed Dependency: the Client has already retried what can be retried (429, 5xx),
// and the reader must not retry again (go-containerregistry, as trivy uses it, retries 429 and 5xx
// with backoff), so a failing registry fails a scan at once.
func relayFailure(w http.ResponseWriter, err error) {
	code := http.StatusFailedDependency
	switch {
	case errors.Is(err, ErrNotFound):
		relayError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "not found in the registry")
	case errors.Is(err, ErrUnauthorized):
		relayError(w, code, "UNAUTHORIZED", "the registry refused the Registry's credentials")
	case errors.Is(err, ErrRateLimited):
		relayError(w, code, "TOOMANYREQUESTS", "the registry rate-limits")
	case errors.Is(err, ErrTooLarge):
		relayError(w, code, "SIZE_INVALID", "registry response too large")
	case errors.Is(err, ErrTimeout):
		relayError(w, code, "UNAVAILABLE", "the registry did not answer in time")
	default:
		relayError(w, code, "UNAVAILABLE", "the registry could not be read")
	}
}

func relayError(w http.ResponseWriter, code int, errCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, errCode, msg)
}
