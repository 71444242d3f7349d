package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/egress"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/retention"
)

// registryClient is a read-only client of reg's registry with the credentials auth names, and
// whether it sends none. The CA of spec.certSecretRef is read from the cluster when set. Credentials
// are never printed.
func registryClient(ctx context.Context, cl client.Reader, reg *v1alpha1.Registry, auth string) (_ *registry.Client, anonymous bool, _ error) {
	c, err := newRegistryClient(ctx, cl, reg, auth, &anonymous)
	return c, anonymous, err
}

func newRegistryClient(ctx context.Context, cl client.Reader, reg *v1alpha1.Registry, auth string, anonymous *bool) (*registry.Client, error) {
	u, err := url.Parse(reg.Spec.URL)
	switch {
	case err != nil || u.Host == "":
		return nil, fmt.Errorf("Registry %s/%s: spec.url %q is not an absolute URL", reg.Namespace, reg.Name, reg.Spec.URL)
	case u.User != nil:
		return nil, fmt.Errorf("Registry %s/%s: spec.url must not carry credentials", reg.Namespace, reg.Name)
	}
	cfg := registry.Config{URL: reg.Spec.URL, Insecure: reg.Spec.Insecure, MetricsName: "cli/" + reg.Namespace + "/" + reg.Name}
	if rq := reg.Spec.Requests; rq != nil && rq.PerSecond != nil {
		cfg.RequestsPerSecond = float64(*rq.PerSecond)
	}
	secret := func(name string) (*corev1.Secret, error) {
		s := &corev1.Secret{}
		if err := cl.Get(ctx, client.ObjectKey{Namespace: reg.Namespace, Name: name}, s); err != nil {
			return nil, fmt.Errorf("reading Secret %s/%s of Registry %s: %w", reg.Namespace, name, reg.Name, err)
		}
		return s, nil
	}
	switch auth {
	case AuthKeychain:
		host, err := name.NewRegistry(u.Host) // the keychain looks logins up by host name only
		if err != nil {
			return nil, fmt.Errorf("registry host %q: %w", u.Host, err)
		}
		if cfg.Auth, err = authn.DefaultKeychain.Resolve(host); err != nil {
			return nil, fmt.Errorf("reading your registry logins for %s: %w", u.Host, err)
		}
		if cfg.Auth != authn.Anonymous && u.Scheme == "http" && !egress.IsLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("Registry %s/%s is plain http (%s): your own registry login is not sent over it; use --registry-auth=secret (the Registry's credentials) or --registry-auth=anonymous",
				reg.Namespace, reg.Name, u.Host)
		}
	case AuthSecret:
		if reg.Spec.SecretRef == nil {
			break // the Registry is read anonymously
		}
		s, err := secret(reg.Spec.SecretRef.Name)
		if err != nil {
			return nil, err
		}
		if cfg.Auth, err = registry.AuthFromSecret(s, strings.ToLower(u.Host)); err != nil {
			return nil, err
		}
	case AuthAnonymous:
	default:
		return nil, fmt.Errorf("unknown --registry-auth %q: want %s, %s or %s", auth, AuthKeychain, AuthSecret, AuthAnonymous)
	}
	*anonymous = cfg.Auth == nil || cfg.Auth == authn.Anonymous
	if ref := reg.Spec.CertSecretRef; ref != nil {
		s, err := secret(ref.Name)
		if err != nil {
			return nil, err
		}
		if !x509.NewCertPool().AppendCertsFromPEM(s.Data["ca.crt"]) {
			return nil, fmt.Errorf("Secret %s/%s: ca.crt holds no PEM certificate", reg.Namespace, ref.Name)
		}
		cfg.CAPEM = s.Data["ca.crt"]
	}
	return registry.New(cfg)
}

// listRepositories lists repos (retention.List, as the manager lists before planning deletions),
// workers at a time, printing progress every 2 s. A repository the registry no longer has (its tag
// list answers 404) is returned in missing; any other error stops the listing, and the first one is
// returned (the parent context's own error when it ended).
func listRepositories(ctx context.Context, rc *registry.Client, repos []string, workers int, anonymous bool, progress io.Writer) (_ map[string]retention.Listing, missing []string, _ error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		out      = map[string]retention.Listing{}
		firstErr error
		wg       sync.WaitGroup
		last     = time.Now()
	)
	cache := &retention.Cache{}
	next := make(chan string)
	for range min(max(1, workers), max(1, len(repos))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for repo := range next {
				lst, err := retention.List(ctx, rc, cache, repo)
				mu.Lock()
				switch {
				case errors.Is(err, registry.ErrNotFound):
					missing = append(missing, repo)
				case err != nil && firstErr == nil:
					firstErr = listError(repo, err, anonymous)
					cancel()
				case err == nil:
					out[repo] = lst
					if time.Since(last) >= 2*time.Second {
						last = time.Now()
						fmt.Fprintf(progress, "portcullis: listed %d of %d repositories...\n", len(out), len(repos))
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, repo := range repos {
		select {
		case next <- repo:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	slices.Sort(missing)
	if err := parent.Err(); err != nil {
		return out, missing, err
	}
	return out, missing, firstErr
}

// listError explains a listing failure and what to do about it.
func listError(repo string, err error, anonymous bool) error {
	switch {
	case errors.Is(err, registry.ErrUnauthorized) && anonymous:
		return fmt.Errorf("listing %s for the retention preview: the registry wants credentials and none were sent: log in to the registry (docker login, crane auth login), or use --registry-auth=secret to use the Registry's own credentials, or --skip-retention", repo)
	case errors.Is(err, registry.ErrUnauthorized):
		return fmt.Errorf("listing %s for the retention preview: %w: log in to the registry (docker login, crane auth login), or use --registry-auth=secret to use the Registry's own credentials, or --skip-retention", repo, err)
	}
	return fmt.Errorf("listing %s for the retention preview: %w (--skip-retention previews the verdicts without reading the registry)", repo, err)
}
