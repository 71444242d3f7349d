package controller

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/egress"
	"github.com/portcullis-dev/portcullis/internal/harbor"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// clientConfig is the registry client configuration a Registry's spec and Secrets give, with a key
// that changes whenever any input changes (so a new Secret version gets a new client).
type clientConfig struct {
	registry.Config
	key string
}

// registryAccess turns a Registry into a registry client: it applies the manager's host rules, reads
// the credentials and CA from the Registry's namespace, and keeps one client per Registry across
// passes and controllers (discovery and verification share tokens, connections and rate limit).
type registryAccess struct {
	apiReader client.Reader
	options   Options
	clients   clientCache[*registry.Client]
	harbors   clientCache[*harbor.Client]
	// relay serves the scanner the Registries' images through their clients (nil: the scanner
	// reaches registries itself, with the credentials).
	relay *registry.Relay
}

// forget drops what is kept for a deleted Registry.
func (r *registryAccess) forget(key types.NamespacedName) {
	r.clients.forget(key)
	r.harbors.forget(key)
	if r.relay != nil {
		r.relay.Forget(key.String())
	}
}

// client returns the registry client for obj. A spec or Secret that cannot work stalls; an API error
// is transient.
func (r *registryAccess) client(ctx context.Context, obj *v1alpha1.Registry) (*registry.Client, outcome, bool, error) {
	cfg, o, ok, err := r.clientConfig(ctx, obj)
	if !ok || err != nil {
		return nil, o, ok, err
	}
	c, err := r.clients.get(client.ObjectKeyFromObject(obj), cfg.key, func() (*registry.Client, error) { return registry.New(cfg.Config) })
	switch {
	case errors.Is(err, registry.ErrNotAllowed):
		return nil, stalled(v1alpha1.HostNotAllowedReason, "%v", err), false, nil
	case err != nil:
		return nil, stalled(v1alpha1.InvalidSpecReason, "%v", err), false, nil
	}
	return c, outcome{}, true, nil
}

// resolveTag is Wiring.ResolveTag.
func (r *registryAccess) resolveTag(ctx context.Context, obj *v1alpha1.Registry, repository, tag string) (string, error) {
	c, o, ok, err := r.client(ctx, obj)
	switch {
	case err != nil:
		return "", err
	case !ok:
		return "", fmt.Errorf("the Registry %s/%s cannot be reached as configured: %s", obj.Namespace, obj.Name, o.message)
	}
	m, err := c.Resolve(ctx, repository, tag)
	if err != nil {
		c.Forget(err)
		return "", err
	}
	return m.Digest, nil
}

// clientConfig checks the endpoint against the manager's rules and reads the credentials and CA.
func (r *registryAccess) clientConfig(ctx context.Context, obj *v1alpha1.Registry) (clientConfig, outcome, bool, error) {
	u, o, ok := r.checkEndpoint(obj)
	if !ok {
		return clientConfig{}, o, false, nil
	}
	cfg := clientConfig{Config: registry.Config{
		URL: obj.Spec.URL, Insecure: obj.Spec.Insecure, MetricsName: obj.Namespace + "/" + obj.Name,
		Egress: r.options.Egress,
	}}
	if rq := obj.Spec.Requests; rq != nil && rq.PerSecond != nil {
		cfg.RequestsPerSecond = float64(*rq.PerSecond)
	}
	keyParts := []string{obj.Spec.URL, boolString(obj.Spec.Insecure), fmt.Sprint(cfg.RequestsPerSecond)}
	if ref := obj.Spec.SecretRef; ref != nil {
		s, o, ok, err := getSecret(ctx, r.apiReader, obj.Namespace, ref.Name)
		if !ok || err != nil {
			return clientConfig{}, o, false, err
		}
		auth, err := registry.AuthFromSecret(s, strings.ToLower(u.Host))
		if err != nil {
			return clientConfig{}, stalled(v1alpha1.SecretInvalidReason, "%v", err), false, nil
		}
		cfg.Auth = auth
		keyParts = append(keyParts, string(s.UID), s.ResourceVersion)
	}
	if ref := obj.Spec.CertSecretRef; ref != nil {
		s, o, ok, err := getSecret(ctx, r.apiReader, obj.Namespace, ref.Name)
		if !ok || err != nil {
			return clientConfig{}, o, false, err
		}
		if !x509.NewCertPool().AppendCertsFromPEM(s.Data["ca.crt"]) {
			return clientConfig{}, stalled(v1alpha1.SecretInvalidReason, "Secret %q: ca.crt holds no PEM certificate", s.Name), false, nil
		}
		cfg.CAPEM = s.Data["ca.crt"]
		keyParts = append(keyParts, string(s.UID), s.ResourceVersion)
	}
	sum := sha256.Sum256([]byte(strings.Join(keyParts, "\x00")))
	cfg.key = hex.EncodeToString(sum[:])
	return cfg, outcome{}, true, nil
}

// checkEndpoint applies the manager's host allowlist and plain-http rules to spec.url.
func (r *registryAccess) checkEndpoint(obj *v1alpha1.Registry) (*url.URL, outcome, bool) {
	u, err := url.Parse(obj.Spec.URL)
	if err != nil || u.Host == "" {
		return nil, stalled(v1alpha1.InvalidSpecReason, "spec.url %q is not an absolute URL", obj.Spec.URL), false
	}
	if u.User != nil {
		return nil, stalled(v1alpha1.InvalidSpecReason, "spec.url must not carry credentials: use secretRef"), false
	}
	if !r.options.hostAllowed(u) {
		return nil, stalled(v1alpha1.HostNotAllowedReason, "host %q is not in the manager's allowed registry hosts", u.Host), false
	}
	if u.Scheme == "http" {
		if !obj.Spec.Insecure {
			return nil, stalled(v1alpha1.InvalidSpecReason, "spec.url is plain http: set insecure: true"), false
		}
		if !egress.IsLoopbackHost(u.Hostname()) && !r.options.AllowInsecureRegistries {
			return nil, stalled(v1alpha1.InsecureNotAllowedReason,
				"plain http to %q is allowed only for loopback hosts unless the manager runs with --allow-insecure-registries", u.Host), false
		}
	}
	return u, outcome{}, true
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// clientCache keeps one client (registry or Harbor API) per Registry, replaced when its
// configuration key changes.
type clientCache[C any] struct {
	mu sync.Mutex
	m  map[types.NamespacedName]cachedClient[C]
}

type cachedClient[C any] struct {
	key string
	c   C
}

func (cc *clientCache[C]) get(name types.NamespacedName, key string, build func() (C, error)) (C, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if e, ok := cc.m[name]; ok && e.key == key {
		return e.c, nil
	}
	c, err := build()
	if err != nil {
		var zero C
		return zero, errors.Join(errors.New("configuring the registry client"), err)
	}
	if cc.m == nil {
		cc.m = map[types.NamespacedName]cachedClient[C]{}
	}
	cc.m[name] = cachedClient[C]{key: key, c: c}
	return c, nil
}

func (cc *clientCache[C]) forget(name types.NamespacedName) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	delete(cc.m, name)
}

// statusEqual compares two statuses semantically (times by value).
func statusEqual(a, b any) bool { return equality.Semantic.DeepEqual(a, b) }

// getSecret reads a Secret (uncached, through the APIReader). A missing Secret stalls (a watch
// re-queues when it appears); any other error is transient.
func getSecret(ctx context.Context, c client.Reader, ns, name string) (*corev1.Secret, outcome, bool, error) {
	s := &corev1.Secret{}
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, s)
	switch {
	case apierrors.IsNotFound(err):
		return nil, stalled(v1alpha1.SecretNotFoundReason, "Secret %q not found in namespace %q", name, ns), false, nil
	case err != nil:
		return nil, failed(v1alpha1.ReadFailedReason, fmt.Errorf("reading Secret %q: %w", name, err)), false, err
	}
	return s, outcome{}, true, nil
}
