// Package registry is Portcullis's only speaker of the OCI distribution protocol
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md), on go-containerregistry:
// repository and tag listing with paging, tag-to-digest resolution, index children, credentials from
// Secrets, and polite HTTP (rate limit, Retry-After, size limits, request counters). Every error wraps
// one of the Err* kinds.
package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/time/rate"

	"github.com/portcullis-dev/portcullis/internal/egress"
)

// Defaults of Config.
const (
	// DefaultRequestsPerSecond suits a self-hosted registry (Distribution, Harbor); hosted registries
	// publish their own limits (set spec.requests.perSecond below them).
	DefaultRequestsPerSecond = 100
	DefaultMaxBody           = 4 << 20 // 4 MiB: the distribution spec's recommended manifest size limit
	DefaultPageSize          = 100
	DefaultMaxRetries        = 3
	DefaultRetryBase         = time.Second
	DefaultMaxRetryWait      = 30 * time.Second
	// DefaultBodyStallTimeout is Config.BodyStallTimeout's default.
	DefaultBodyStallTimeout = 30 * time.Second
)

// Config configures a Client for one registry.
type Config struct {
	// URL is the registry's API root: scheme and host[:port], e.g. https://registry.example.com.
	URL string
	// Insecure allows plain http. The caller decides whether that is permitted.
	Insecure bool
	// Auth authenticates requests; nil is anonymous. Bearer tokens are fetched as the registry's
	// WWW-Authenticate challenge asks.
	Auth authn.Authenticator
	// CAPEM holds extra PEM CA certificates to trust besides the system roots.
	CAPEM []byte
	// MetricsName labels the request counter, normally "<namespace>/<name>" of the Registry.
	MetricsName string
	// RequestsPerSecond caps the request rate to this registry (default DefaultRequestsPerSecond;
	// burst the same). Every request made through the Client or its RemoteOptions counts.
	RequestsPerSecond float64
	// MaxBody caps every response body, in bytes (default 4 MiB).
	MaxBody int64
	// PageSize is the `n` asked for when paging catalog and tags (default 100).
	PageSize int
	// MaxPages, when above 0, stops paging after this many pages with ErrInvalidResponse. 0 (the
	// default) sets no cap: a listing ends when the registry gives no next page, fails when it
	// repeats a next link or sends a page of nothing new, and in any case ends at the caller's
	// deadline.
	MaxPages int
	// MaxRetries is how often a 429/502/503/504 is retried (default 3); RetryBase the first backoff
	// when no Retry-After is given (default 1s, doubling); MaxRetryWait the longest wait honoured
	// (default 30s; a longer Retry-After fails the request with ErrRateLimited).
	MaxRetries   int
	RetryBase    time.Duration
	MaxRetryWait time.Duration
	// BodyStallTimeout fails a response whose body delivers no byte for this long while it is being
	// read (default DefaultBodyStallTimeout), with ErrTimeout: a registry that drips its body, or
	// stops sending, frees the worker instead of holding it until the operation's deadline.
	BodyStallTimeout time.Duration
	// Egress checks every connection (to the registry, its token realm, redirect targets) at dial
	// time, on the resolved address; a refused one fails with ErrNotAllowed. nil checks nothing.
	Egress *egress.Policy
}

// Client lists one registry. It is safe for concurrent use; keep one per Registry across passes so
// that bearer tokens and connections are reused.
type Client struct {
	reg      name.Registry
	nameOpts []name.Option
	pageSize int
	maxPages int

	remoteOpts []remote.Option
	auth       authn.Authenticator
	insecure   bool
	newPuller  func() (*remote.Puller, error)
	mu         sync.Mutex
	puller     *remote.Puller
	transport  *politeTransport
	// manifests keeps manifests fetched by Fetch, by digest (content-addressed, so never stale), for
	// the Relay: the scanner's read of a manifest the listing just fetched costs no request.
	manifests *manifestCache
}

// cachedManifest is a manifest body and its media type.
type cachedManifest struct {
	body      []byte
	mediaType string
}

// noReferrersFor is how long a 404 from the referrers API is believed: a registry upgraded to one
// that has the API is noticed within a day.
const noReferrersFor = 24 * time.Hour

// NoReferrersAPI reports whether the registry answered 404 to its referrers API within the last
// day (and not 200 since): it has no referrers API, and referrers live only under the fallback tag.
func (c *Client) NoReferrersAPI() bool {
	at := c.transport.noReferrers.Load()
	return at != 0 && c.transport.now().Sub(time.Unix(0, at)) < noReferrersFor
}

// RemoteOptions are go-containerregistry options that reach this registry the same way the Client
// does (its polite transport, credentials and no extra retries), for other libraries that take them
// (cosign, to fetch signatures). They reuse the Client's Puller, so the registry's ping and bearer
// tokens are paid once per repository and scope, not once per call. Call it per operation: after a
// failure that may pass, Forget drops the Puller and the next call gets a fresh one.
func (c *Client) RemoteOptions() []remote.Option {
	c.mu.Lock()
	p := c.puller
	c.mu.Unlock()
	opts := slices.Clip(c.remoteOpts)
	if p == nil {
		return opts
	}
	return append(opts, remote.Reuse(p))
}

// Forget drops the shared Puller after err, an error from an operation made with RemoteOptions,
// unless err says something about the content (not found, invalid, too large), as the Client's
// own calls do: go-containerregistry keeps a failed repository set-up (ping, token) for good.
func (c *Client) Forget(err error) {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidResponse) || errors.Is(err, ErrTooLarge) {
		return
	}
	if k := kindOf(err); k == ErrNotFound || k == ErrInvalidResponse || k == ErrTooLarge {
		return
	}
	c.mu.Lock()
	c.puller = nil
	c.mu.Unlock()
}

// Credentials returns the username and password (or identity token as password) the Client
// authenticates with, for libraries that take plain credentials (trivy); empty for anonymous access.
// Insecure reports whether plain http is allowed.
func (c *Client) Credentials() (username, password string, insecure bool, err error) {
	cfg, err := c.auth.Authorization()
	if err != nil {
		return "", "", c.insecure, err
	}
	if cfg.IdentityToken != "" {
		return "<token>", cfg.IdentityToken, c.insecure, nil
	}
	return cfg.Username, cfg.Password, c.insecure, nil
}

// pull returns the current Puller. go-containerregistry's Puller sets each repository up once (ping,
// token) and keeps a failed set-up for good, so after a failure that may pass (auth, unavailable,
// timeout, rate limit) done drops it and the next call starts afresh.
func (c *Client) pull() (p *remote.Puller, done func(error) error, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.puller == nil {
		if c.puller, err = c.newPuller(); err != nil {
			return nil, nil, err
		}
	}
	p = c.puller
	return p, func(err error) error {
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalidResponse) && !errors.Is(err, ErrTooLarge) {
			c.mu.Lock()
			if c.puller == p {
				c.puller = nil
			}
			c.mu.Unlock()
		}
		return err
	}, nil
}

// New builds a Client. It fails when the URL does not parse or the CA bundle holds no certificate.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("registry URL %q: want scheme://host[:port]", cfg.URL)
	}
	var nameOpts []name.Option
	if u.Scheme == "http" {
		if !cfg.Insecure {
			return nil, fmt.Errorf("registry URL %q is plain http but insecure is not set", cfg.URL)
		}
		nameOpts = append(nameOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("registry host %q: %w", u.Host, err)
	}
	base, err := httpTransport(cfg.CAPEM, cfg.Egress)
	if err != nil {
		return nil, err
	}
	def := func(v, d float64) float64 {
		if v <= 0 {
			return d
		}
		return v
	}
	rps := def(cfg.RequestsPerSecond, DefaultRequestsPerSecond)
	t := &politeTransport{
		plainHTTP:  u.Scheme == "http",
		base:       base,
		limiter:    rate.NewLimiter(rate.Limit(rps), max(1, int(rps))),
		background: rate.NewLimiter(rate.Limit(rps/2), max(1, int(rps/2))),
		maxBody:    int64(def(float64(cfg.MaxBody), DefaultMaxBody)),
		maxRetries: int(def(float64(cfg.MaxRetries), DefaultMaxRetries)),
		retryBase:  time.Duration(def(float64(cfg.RetryBase), float64(DefaultRetryBase))),
		maxWait:    time.Duration(def(float64(cfg.MaxRetryWait), float64(DefaultMaxRetryWait))),
		registry:   cfg.MetricsName,
		now:        time.Now,
		stall:      time.Duration(def(float64(cfg.BodyStallTimeout), float64(DefaultBodyStallTimeout))),
	}
	t.adaptive = newAdaptiveRate(rate.Limit(rps), t.now, t.limiter, t.background)
	t.adaptive.name = cfg.MetricsName
	auth := cfg.Auth
	if auth == nil {
		auth = authn.Anonymous
	}
	pageSize := int(def(float64(cfg.PageSize), DefaultPageSize))
	remoteOpts := []remote.Option{
		remote.WithTransport(t),
		remote.WithAuth(auth),
		remote.WithUserAgent("portcullis"),
		remote.WithPageSize(pageSize),
		// politeTransport retries; go-containerregistry's own retries would multiply requests.
		remote.WithRetryStatusCodes(),
		remote.WithRetryPredicate(func(error) bool { return false }),
	}
	newPuller := func() (*remote.Puller, error) { return remote.NewPuller(remoteOpts...) }
	c := &Client{reg: reg, nameOpts: nameOpts, pageSize: pageSize, newPuller: newPuller, remoteOpts: remoteOpts,
		auth: auth, insecure: u.Scheme == "http", transport: t, manifests: newManifestCache(),
		maxPages: max(0, cfg.MaxPages)}
	if _, _, err := c.pull(); err != nil {
		return nil, err
	}
	return c, nil
}

func httpTransport(caPEM []byte, policy *egress.Policy) (*http.Transport, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if len(caPEM) > 0 && !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("CA bundle holds no PEM certificate")
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           policy.Dialer(10*time.Second, 30*time.Second).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
	}, nil
}

// Repositories lists the registry's catalog (`GET /v2/_catalog`), following `Link: <...>;
// rel="next"` pages. A page that repeats an earlier next link, or more than MaxPages pages, fails
// with ErrInvalidResponse.
func (c *Client) Repositories(ctx context.Context) (repos []string, err error) {
	p, done, err := c.pull()
	if err != nil {
		return nil, err
	}
	defer func() { err = done(err) }()
	pager, err := p.Catalogger(ctx, c.reg)
	if err != nil {
		return nil, classify("listing the catalog", err)
	}
	return collectPages(ctx, "listing the catalog", c.maxPages, pager.HasNext, pager.Next,
		func(p *remote.Catalogs) ([]string, string) { return p.Repos, p.Next })
}

// Tags lists a repository's tags (`GET /v2/<name>/tags/list`) with the same paging rules as
// Repositories. A repository that does not exist fails with ErrNotFound.
func (c *Client) Tags(ctx context.Context, repository string) (tags []string, err error) {
	op := "listing tags of " + repository
	repo, err := c.repo(repository)
	if err != nil {
		return nil, classify(op, err)
	}
	p, done, err := c.pull()
	if err != nil {
		return nil, err
	}
	defer func() { err = done(err) }()
	pager, err := p.Lister(ctx, repo)
	if err != nil {
		return nil, classify(op, err)
	}
	return collectPages(ctx, op, c.maxPages, pager.HasNext, pager.Next,
		func(p *remote.Tags) ([]string, string) { return p.Tags, p.Next })
}

// collectPages reads a paged listing to the end, following the registry's `Link: <...>; rel="next"`
// pages, and returns each item once, in the order first seen.
func collectPages[P any](ctx context.Context, op string, maxPages int, hasNext func() bool,
	next func(context.Context) (P, error), parts func(P) (items []string, nextLink string)) ([]string, error) {
	var out []string
	err := walkPages(ctx, op, maxPages, hasNext, next, parts, func(items []string) error {
		out = append(out, items...)
		return nil
	})
	return out, err
}

// walkPages calls fn with the new items of each page of a paged listing, following the registry's
// `Link: <...>; rel="next"` pages. Whatever a registry's paging does, it ends and never gives an item
// twice: a next link seen before, or a page of nothing but earlier items, fails with
// ErrInvalidResponse (a loop), and maxPages, when above 0, caps it; items repeated beside new ones
// are dropped.
// An error from fn stops the walk and is returned as it is.
func walkPages[P any](ctx context.Context, op string, maxPages int, hasNext func() bool,
	next func(context.Context) (P, error), parts func(P) (items []string, nextLink string), fn func([]string) error) error {
	seenItems := map[string]struct{}{}
	seenLinks := map[string]bool{}
	for pages := 0; hasNext(); pages++ {
		if maxPages > 0 && pages >= maxPages {
			return classify(op, fmt.Errorf("%w: more than %d pages", ErrInvalidResponse, maxPages))
		}
		page, err := next(ctx)
		if err != nil {
			return classify(op, err)
		}
		items, link := parts(page)
		if link != "" && seenLinks[link] {
			return classify(op, fmt.Errorf("%w: the next-page link %s repeats", ErrInvalidResponse, link))
		}
		seenLinks[link] = true
		fresh := items[:0:0]
		for _, it := range items {
			if _, dup := seenItems[it]; !dup {
				seenItems[it] = struct{}{}
				fresh = append(fresh, it)
			}
		}
		if len(fresh) == 0 && len(items) > 0 {
			// A registry that repeats itself: the listing may be cut short, so it is not taken as whole.
			return classify(op, fmt.Errorf("%w: page %d repeats earlier items only", ErrInvalidResponse, pages+1))
		}
		if err := fn(fresh); err != nil {
			return err
		}
	}
	return nil
}

// Manifest is what a tag points at.
type Manifest struct {
	// Digest of the manifest or index, e.g. sha256:...
	Digest string
	// MediaType of the manifest (OCI or Docker, image or index).
	MediaType string
}

// IsIndex reports whether the manifest is an OCI image index or a Docker manifest list.
func (m Manifest) IsIndex() bool { return types.MediaType(m.MediaType).IsIndex() }

// Resolve returns the digest a tag points at, with one `HEAD /v2/<name>/manifests/<tag>` carrying
// go-containerregistry's Accept list (OCI index and manifest, Docker manifest list and v2 manifest,
// and Docker schema 1); when the HEAD gives no usable digest (some registries omit
// Docker-Content-Digest) it falls back to GET and computes the digest from the body. A tag or
// repository that does not exist (404 with MANIFEST_UNKNOWN or NAME_UNKNOWN) is ErrNotFound.
func (c *Client) Resolve(ctx context.Context, repository, tag string) (Manifest, error) {
	return c.tagManifest(ctx, repository, tag, func(p *remote.Puller, ref name.Reference) (Manifest, error) {
		desc, err := p.Head(ctx, ref)
		if err == nil {
			return Manifest{Digest: desc.Digest.String(), MediaType: string(desc.MediaType)}, nil
		}
		if k := kindOf(err); k != ErrInvalidResponse {
			return Manifest{}, err // 401, 404, 429, 5xx, timeouts: a GET would fare no better
		}
		got, err := p.Get(ctx, ref)
		if err != nil {
			return Manifest{}, err
		}
		return Manifest{Digest: got.Digest.String(), MediaType: string(got.MediaType)}, nil
	})
}

// Fetch returns what a tag points at like Resolve, with one `GET /v2/<name>/manifests/<tag>`
// instead of a HEAD, and keeps the manifest by digest so that the scanner, reading it through the
// Relay, costs the registry nothing more. For a tag seen for the first time the manifest is needed
// anyway; for a known tag Resolve's HEAD is cheaper.
func (c *Client) Fetch(ctx context.Context, repository, tag string) (Manifest, error) {
	return c.tagManifest(ctx, repository, tag, func(p *remote.Puller, ref name.Reference) (Manifest, error) {
		got, err := p.Get(ctx, ref)
		if err != nil {
			return Manifest{}, err
		}
		c.manifests.Add(got.Digest.String(), cachedManifest{body: got.Manifest, mediaType: string(got.MediaType)})
		return Manifest{Digest: got.Digest.String(), MediaType: string(got.MediaType)}, nil
	})
}

// tagManifest runs read for repository:tag with the Client's Puller, classifying its error.
func (c *Client) tagManifest(ctx context.Context, repository, tag string,
	read func(*remote.Puller, name.Reference) (Manifest, error)) (m Manifest, err error) {
	op := fmt.Sprintf("resolving %s:%s", repository, tag)
	ref, err := c.ref(repository, ":"+tag)
	if err != nil {
		return Manifest{}, classify(op, err)
	}
	p, done, err := c.pull()
	if err != nil {
		return Manifest{}, err
	}
	defer func() { err = done(err) }()
	if m, err = read(p, ref); err != nil {
		return Manifest{}, classify(op, err)
	}
	return m, nil
}

// Platform is one child manifest of an index.
type Platform struct {
	// Digest of the child manifest.
	Digest string
	// Platform as os/architecture[/variant], empty when the index does not say.
	Platform string
}

// Platforms fetches an index by digest and returns its children. The body's digest is checked
// against the one asked for.
func (c *Client) Platforms(ctx context.Context, repository, digest string) (_ []Platform, err error) {
	op := fmt.Sprintf("reading index %s@%s", repository, digest)
	ref, err := c.ref(repository, "@"+digest)
	if err != nil {
		return nil, classify(op, err)
	}
	p, done, err := c.pull()
	if err != nil {
		return nil, err
	}
	defer func() { err = done(err) }()
	desc, err := p.Get(ctx, ref)
	if err != nil {
		return nil, classify(op, err)
	}
	if !desc.MediaType.IsIndex() {
		return nil, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, classify(op, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, classify(op, err)
	}
	out := make([]Platform, 0, len(im.Manifests))
	for _, m := range im.Manifests {
		out = append(out, Platform{Digest: m.Digest.String(), Platform: platformString(m.Platform)})
	}
	return out, nil
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func (c *Client) repo(repository string) (name.Repository, error) {
	r, err := name.NewRepository(c.reg.RegistryStr()+"/"+repository, c.nameOpts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("%w: repository name %q: %w", ErrInvalidResponse, repository, err)
	}
	return r, nil
}

func (c *Client) ref(repository, suffix string) (name.Reference, error) {
	r, err := name.ParseReference(c.reg.RegistryStr()+"/"+repository+suffix, c.nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("%w: reference %s%s: %w", ErrInvalidResponse, repository, suffix, err)
	}
	return r, nil
}

// Manifest returns the manifest or index with the given digest and its media type: from the
// manifests the Client fetched lately (the listing's, no request), else with one GET by digest,
// whose body go-containerregistry checks against the digest. It is then kept for the Relay, so the
// scanner's read of the same manifest costs no request either.
func (c *Client) Manifest(ctx context.Context, repository, digest string) (body []byte, mediaType string, err error) {
	if v, ok := c.manifests.Get(digest); ok {
		m := v.(cachedManifest)
		return m.body, m.mediaType, nil
	}
	op := fmt.Sprintf("reading %s@%s", repository, digest)
	ref, err := c.ref(repository, "@"+digest)
	if err != nil {
		return nil, "", classify(op, err)
	}
	p, done, err := c.pull()
	if err != nil {
		return nil, "", err
	}
	defer func() { err = done(err) }()
	got, err := p.Get(ctx, ref)
	if err != nil {
		return nil, "", classify(op, err)
	}
	c.manifests.Add(got.Digest.String(), cachedManifest{body: got.Manifest, mediaType: string(got.MediaType)})
	return got.Manifest, string(got.MediaType), nil
}

// Exists reports whether repository@digest is in the registry, with one `HEAD
// /v2/<name>/manifests/<digest>` (never answered from the Client's manifest cache): false with a
// nil error when the registry says the manifest or the repository is unknown.
func (c *Client) Exists(ctx context.Context, repository, digest string) (found bool, err error) {
	op := fmt.Sprintf("looking for %s@%s", repository, digest)
	ref, err := c.ref(repository, "@"+digest)
	if err != nil {
		return false, classify(op, err)
	}
	p, done, err := c.pull()
	if err != nil {
		return false, err
	}
	defer func() { err = done(err) }()
	if _, err := p.Head(ctx, ref); err != nil {
		if err = classify(op, err); errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
