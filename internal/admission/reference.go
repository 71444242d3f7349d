package admission

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Reference is a container image reference as a Pod names it, split into the parts the inventory
// is keyed by.
type Reference struct {
	// Image is the reference as written in the Pod spec, e.g. `registry.example.com/shop/api:v1`.
	Image string
	// Host is the registry host (with the port when one is given), lower-cased, with Docker Hub's
	// names (`docker.io`, `registry-1.docker.io`) as `index.docker.io`.
	Host string
	// Repository is the repository path, e.g. `shop/api` (`library/nginx` for Docker Hub's `nginx`).
	Repository string
	// Tag is the tag, "" when the reference has only a digest. A reference with neither names
	// `latest`, as the container runtime reads it.
	Tag string
	// Digest is the digest (`sha256:<hex>`), "" when the reference has only a tag. When both are
	// given the runtime pulls the digest; the tag is only informative.
	Digest string
}

// ParseReference parses a Pod's image reference by the OCI distribution reference grammar
// (go-containerregistry's name package, which the container runtimes' grammar matches), with the
// runtime's defaults: Docker Hub for a reference without a host, `library/` for a one-part Docker
// Hub name, and `latest` for a reference without tag or digest. `name:tag@digest` is accepted.
func ParseReference(image string) (Reference, error) {
	ref := Reference{Image: image}
	base := image
	if i := strings.LastIndex(image, "@"); i >= 0 {
		d, err := name.NewDigest(image, name.WeakValidation)
		if err != nil {
			return ref, fmt.Errorf("image %q: %w", image, err)
		}
		ref.Digest = d.DigestStr()
		base = image[:i]
	}
	t, err := name.NewTag(base, name.WeakValidation)
	if err != nil {
		return ref, fmt.Errorf("image %q: %w", image, err)
	}
	ref.Host = normalHost(t.RegistryStr())
	ref.Repository = t.RepositoryStr()
	if ref.Digest == "" || strings.Contains(base[strings.LastIndex(base, "/")+1:], ":") {
		ref.Tag = t.TagStr()
	}
	return ref, nil
}

// HostOf is the registry host of a Registry's spec.url in the form Reference.Host uses, "" when the
// URL does not parse.
func HostOf(registryURL string) string {
	u, err := url.Parse(registryURL)
	if err != nil || u.Host == "" {
		return ""
	}
	return normalHost(u.Host)
}

// normalHost lower-cases host and gives Docker Hub one name.
func normalHost(host string) string {
	host = strings.ToLower(host)
	switch host {
	case "docker.io", "registry-1.docker.io", "index.docker.io":
		return name.DefaultRegistry
	}
	return host
}
