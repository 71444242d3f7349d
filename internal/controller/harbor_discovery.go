package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// errHarborConfig: the Registry's spec or Secrets cannot give a Harbor client (not transient).
var errHarborConfig = errors.New("the Registry cannot be used")

// harbor returns the Harbor API client for a Registry of provider Harbor, built from its URL,
// credentials, CA and timeout, and kept across passes and controllers until they change. A spec or
// Secret that cannot work gives errHarborConfig.
func (r *registryAccess) harbor(ctx context.Context, reg *v1alpha1.Registry) (*harbor.Client, error) {
	cfg, o, ok, err := r.clientConfig(ctx, reg)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", errHarborConfig, o.message)
	}
	var user, pass string
	if cfg.Auth != nil {
		ac, err := cfg.Auth.Authorization()
		if err != nil {
			return nil, fmt.Errorf("reading the Registry's credentials: %w", err)
		}
		user, pass = ac.Username, ac.Password
	}
	key := cfg.key + "/" + registryTimeout(reg).String() // a new timeout makes a new client
	return r.harbors.get(client.ObjectKeyFromObject(reg), key, func() (*harbor.Client, error) {
		hc, err := harbor.New(harbor.Config{URL: reg.Spec.URL, Username: user, Password: pass, CAPEM: cfg.CAPEM, Timeout: registryTimeout(reg),
			Egress: r.options.Egress})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errHarborConfig, err)
		}
		return hc, nil
	})
}

// harborLister lists a Registry of provider Harbor: the catalog and the platforms of an index
// through the distribution API, and each repository's tags with their digests through Harbor's
// artifact API (GET /projects/{project}/repositories/{repository}/artifacts?with_tag=true, paged),
// so a listing costs one request per page of artifacts instead of a HEAD per tag.
type harborLister struct {
	*registry.Client
	hc *harbor.Client

	mu   sync.Mutex
	tags map[string]map[string]registry.Manifest // repository -> tag -> manifest
	// fallback is set once the artifact API refused the account (401, 403) or is not there (404
	// for a repository the catalog lists): the rest of the pass lists tags through the
	// distribution API, as for any registry, so pull-only credentials keep working.
	fallback bool
}

func newHarborLister(c *registry.Client, hc *harbor.Client) *harborLister {
	return &harborLister{Client: c, hc: hc, tags: map[string]map[string]registry.Manifest{}}
}

// Tags lists repo's artifacts and returns their tags, remembering each tag's digest for Resolve.
// A repository name without a project (not possible in Harbor) is listed through the distribution
// API.
func (l *harborLister) Tags(ctx context.Context, repo string) ([]string, error) {
	project, name, ok := strings.Cut(repo, "/")
	l.mu.Lock()
	fallback := l.fallback
	l.mu.Unlock()
	if !ok || fallback {
		return l.Client.Tags(ctx, repo)
	}
	arts, err := l.hc.Artifacts(ctx, project, name)
	if errors.Is(err, harbor.ErrUnauthorized) || errors.Is(err, harbor.ErrForbidden) || errors.Is(err, harbor.ErrNotFound) {
		l.mu.Lock()
		l.fallback = true
		l.mu.Unlock()
		return l.Client.Tags(ctx, repo)
	}
	if err != nil {
		return nil, asRegistryError(err)
	}
	byTag := map[string]registry.Manifest{}
	var tags []string
	for _, a := range arts {
		for _, t := range a.Tags {
			if _, dup := byTag[t]; !dup {
				tags = append(tags, t)
			}
			byTag[t] = registry.Manifest{Digest: a.Digest, MediaType: a.MediaType}
		}
	}
	slices.Sort(tags)
	l.mu.Lock()
	l.tags[repo] = byTag
	l.mu.Unlock()
	return tags, nil
}

// Resolve answers from the artifact listing; a tag it does not hold is resolved through the
// distribution API.
func (l *harborLister) Resolve(ctx context.Context, repo, tag string) (registry.Manifest, error) {
	if m, ok := l.listed(repo, tag); ok {
		return m, nil
	}
	return l.Client.Resolve(ctx, repo, tag)
}

// Fetch is Resolve from the artifact listing when it has the tag (no request); otherwise the
// distribution API's GET, keeping the manifest for the scanner.
func (l *harborLister) Fetch(ctx context.Context, repo, tag string) (registry.Manifest, error) {
	if m, ok := l.listed(repo, tag); ok {
		return m, nil
	}
	return l.Client.Fetch(ctx, repo, tag)
}

// listed is the tag's manifest as the artifact listing gave it, when it gave a usable one.
func (l *harborLister) listed(repo, tag string) (registry.Manifest, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.tags[repo][tag]
	return m, ok && m.Digest != "" && m.MediaType != ""
}

// asRegistryError gives a Harbor API error the registry package's kind, which the Registry's
// conditions are made from.
func asRegistryError(err error) error {
	for _, k := range []struct{ h, r error }{
		{harbor.ErrNotFound, registry.ErrNotFound}, {harbor.ErrUnauthorized, registry.ErrUnauthorized},
		{harbor.ErrForbidden, registry.ErrUnauthorized}, {harbor.ErrRateLimited, registry.ErrRateLimited},
		{harbor.ErrUnavailable, registry.ErrUnavailable}, {harbor.ErrUnsupported, registry.ErrUnsupported},
	} {
		if errors.Is(err, k.h) {
			return fmt.Errorf("%w: %w", k.r, err)
		}
	}
	return fmt.Errorf("%w: %w", registry.ErrInvalidResponse, err)
}
