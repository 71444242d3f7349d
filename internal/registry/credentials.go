package registry

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
)

// ErrCredentials: a Secret cannot give credentials for the registry (wrong type, missing keys, no
// entry for the host). The message names the Secret and the problem, never a value.
var ErrCredentials = errors.New("unusable registry credentials")

// AuthFromSecret returns the credentials a Secret holds for host (host[:port]):
//   - kubernetes.io/basic-auth: `username` and `password`;
//   - kubernetes.io/dockerconfigjson: the `auths` entry whose key names the host, with or without
//     scheme and path (`registry.example.com`, `https://registry.example.com/v1/`), holding
//     username+password, a base64 `auth` of user:password, or an `identitytoken`/`registrytoken`
//     (https://github.com/docker/cli/blob/master/docs/reference/commandline/login.md).
func AuthFromSecret(s *corev1.Secret, host string) (authn.Authenticator, error) {
	switch s.Type {
	case corev1.SecretTypeBasicAuth:
		u, p := string(s.Data[corev1.BasicAuthUsernameKey]), string(s.Data[corev1.BasicAuthPasswordKey])
		if u == "" || p == "" {
			return nil, fmt.Errorf("%w: Secret %q needs non-empty %s and %s", ErrCredentials, s.Name, corev1.BasicAuthUsernameKey, corev1.BasicAuthPasswordKey)
		}
		return authn.FromConfig(authn.AuthConfig{Username: u, Password: p}), nil
	case corev1.SecretTypeDockerConfigJson:
		var cfg struct {
			Auths map[string]struct {
				Username      string `json:"username"`
				Password      string `json:"password"`
				Auth          string `json:"auth"`
				IdentityToken string `json:"identitytoken"`
				RegistryToken string `json:"registrytoken"`
			} `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
			return nil, fmt.Errorf("%w: Secret %q: %s is not a docker config", ErrCredentials, s.Name, corev1.DockerConfigJsonKey)
		}
		for key, e := range cfg.Auths {
			if configHost(key) != configHost(host) {
				continue
			}
			entry := authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
			if e.Auth != "" && e.Username == "" {
				raw, err := base64.StdEncoding.DecodeString(e.Auth)
				user, pass, ok := strings.Cut(string(raw), ":")
				if err != nil || !ok {
					return nil, fmt.Errorf("%w: Secret %q: the auth of %q is not base64 user:password", ErrCredentials, s.Name, key)
				}
				entry.Username, entry.Password = user, pass
			}
			if entry.Username == "" && entry.IdentityToken == "" && entry.RegistryToken == "" {
				return nil, fmt.Errorf("%w: Secret %q: the entry for %q holds no credentials", ErrCredentials, s.Name, key)
			}
			return authn.FromConfig(entry), nil
		}
		return nil, fmt.Errorf("%w: Secret %q has no auths entry for %q", ErrCredentials, s.Name, host)
	}
	return nil, fmt.Errorf("%w: Secret %q has type %q; want %s or %s", ErrCredentials, s.Name, s.Type, corev1.SecretTypeDockerConfigJson, corev1.SecretTypeBasicAuth)
}

// configHost normalises a docker config key or a registry host to host[:port]: lower case, no
// scheme or path, no default :443, and Docker Hub's names (docker.io, index.docker.io,
// registry-1.docker.io) as one.
func configHost(key string) string {
	k := strings.ToLower(strings.TrimSpace(key))
	if strings.Contains(k, "://") {
		if u, err := url.Parse(k); err == nil {
			k = u.Host
		}
	}
	k, _, _ = strings.Cut(k, "/")
	k = strings.TrimSuffix(k, ":443")
	switch k {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return "index.docker.io"
	}
	return k
}
