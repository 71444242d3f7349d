// Package registrytest runs real registries for tests: CNCF Distribution (the `registry` binary that
// `make test` builds into the tool cache and names in PORTCULLIS_REGISTRY_BIN) on a loopback port with
// a temporary configuration, and pushes images made with go-containerregistry.
package registrytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"
)

// BinEnv names the environment variable that holds the path of the Distribution binary.
const BinEnv = "PORTCULLIS_REGISTRY_BIN"

// Distribution is a running CNCF Distribution registry.
type Distribution struct {
	// Host is host:port on loopback; URL is http://Host.
	Host, URL string
	auth      authn.Authenticator
}

// Options of a Distribution.
type Options struct {
	// Username and Password, when set, turn on htpasswd authentication with that one user.
	Username, Password string
	// Addr is host:port to listen on; empty picks a free loopback port.
	Addr string
	// Dir holds the configuration, the storage and the log (Start only; tests use a temp dir).
	Dir string
	// NoDelete switches manifest deletion off (Distribution's default), so DELETE answers 405.
	NoDelete bool
	// Notify, when set, is a notifications endpoint (Distribution's `notifications.endpoints`):
	// every push and delete is POSTed to Notify.URL with `Authorization: Bearer <Notify.Token>`.
	Notify *NotifyEndpoint
}

// NotifyEndpoint is one Distribution notifications endpoint.
type NotifyEndpoint struct {
	URL, Token string
}

// notificationsConfig is the `notifications` section for n (docs/configuration.md of
// distribution: "notifications"), pulls ignored, retried every 500ms.
func notificationsConfig(n *NotifyEndpoint) string {
	if n == nil {
		return ""
	}
	return fmt.Sprintf(`notifications:
  endpoints:
    - name: portcullis
      url: %s
      headers:
        Authorization: [Bearer %s]
      timeout: 2s
      threshold: 10
      backoff: 500ms
      ignore:
        actions: [pull]
`, n.URL, n.Token)
}

// StartDistribution starts the registry (deletion enabled unless opts.NoDelete) on a free loopback port and stops it
// when the test ends. It fails the test when the binary is not available.
func StartDistribution(t testing.TB, opts Options) *Distribution {
	t.Helper()
	bin := os.Getenv(BinEnv)
	if bin == "" {
		t.Fatalf("%s is not set: run the tests with `make test`, which builds the registry into the tool cache", BinEnv)
	}
	dir := t.TempDir()
	opts.Dir = dir
	d, stop, err := Start(bin, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Logf("registry log:\n%s", data)
		}
	})
	return d
}

// Start runs the Distribution binary bin with a configuration written into opts.Dir (deletion
// enabled, storage under opts.Dir/data, log in opts.Dir/registry.log) on opts.Addr, or a free loopback
// port, and waits until it answers /v2/. stop ends the process.
func Start(bin string, opts Options) (d *Distribution, stop func(), err error) {
	addr := opts.Addr
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		addr = l.Addr().String()
		_ = l.Close()
	}
	auth := ""
	if opts.Username != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(opts.Password), bcrypt.MinCost)
		if err != nil {
			return nil, nil, err
		}
		htpasswd := filepath.Join(opts.Dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(opts.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, nil, err
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: portcullis-test\n    path: %s\n", htpasswd)
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	config := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: %t
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
%s%s`, filepath.Join(opts.Dir, "data"), !opts.NoDelete, addr, hex.EncodeToString(secret), auth, notificationsConfig(opts.Notify))
	cfgPath := filepath.Join(opts.Dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return nil, nil, err
	}
	logs, err := os.Create(filepath.Join(opts.Dir, "registry.log"))
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	stop = func() {
		cancel()
		_ = cmd.Wait()
		_ = logs.Close()
	}
	d = &Distribution{Host: addr, URL: "http://" + addr, auth: authn.Anonymous}
	if opts.Username != "" {
		d.auth = &authn.Basic{Username: opts.Username, Password: opts.Password}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(d.URL + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return d, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("registry on %s did not answer /v2/ within 15s (log: %s): %v", addr, logs.Name(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Auth is the authenticator for pushing to this registry.
func (d *Distribution) Auth() authn.Authenticator { return d.auth }

// Ref parses repo plus a ":tag" or "@digest" suffix on this registry.
func (d *Distribution) Ref(t testing.TB, repoAndSuffix string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(d.Host+"/"+repoAndSuffix, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// Push writes img as repo:tag and returns its digest.
func (d *Distribution) Push(t testing.TB, repo, tag string, img v1.Image) string {
	t.Helper()
	if err := remote.Write(d.Ref(t, repo+":"+tag), img, remote.WithAuth(d.auth)); err != nil {
		t.Fatalf("pushing %s:%s: %v", repo, tag, err)
	}
	dg, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dg.String()
}

// PushImage is Push outside tests: it writes img as repo:tag and returns its digest.
func (d *Distribution) PushImage(repo, tag string, img v1.Image) (string, error) {
	ref, err := name.ParseReference(d.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, remote.WithAuth(d.auth)); err != nil {
		return "", err
	}
	dg, err := img.Digest()
	return dg.String(), err
}

// PushIndex writes idx as repo:tag and returns its digest.
func (d *Distribution) PushIndex(t testing.TB, repo, tag string, idx v1.ImageIndex) string {
	t.Helper()
	if err := remote.WriteIndex(d.Ref(t, repo+":"+tag), idx, remote.WithAuth(d.auth)); err != nil {
		t.Fatalf("pushing index %s:%s: %v", repo, tag, err)
	}
	dg, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dg.String()
}

// Delete deletes the manifest repo@digest, and so every tag that points at it.
func (d *Distribution) Delete(t testing.TB, repo, digest string) {
	t.Helper()
	if err := remote.Delete(d.Ref(t, repo+"@"+digest), remote.WithAuth(d.auth)); err != nil {
		t.Fatalf("deleting %s@%s: %v", repo, digest, err)
	}
}

// RandomImage is a small image with one random layer, so its digest is unique.
func RandomImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := NewRandomImage()
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// NewRandomImage is RandomImage outside tests.
func NewRandomImage() (v1.Image, error) { return random.Image(256, 1) }

// PlatformIndex is an OCI index of one random image per platform ("linux/amd64", "linux/arm64/v8").
func PlatformIndex(t testing.TB, platforms ...string) v1.ImageIndex {
	t.Helper()
	idx, err := NewPlatformIndex(platforms...)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// NewPlatformIndex is PlatformIndex outside tests.
func NewPlatformIndex(platforms ...string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		parts := strings.Split(p, "/")
		if len(parts) < 2 {
			return nil, fmt.Errorf("platform %q: want os/arch[/variant]", p)
		}
		plat := &v1.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) > 2 {
			plat.Variant = parts[2]
		}
		img, err := NewRandomImage()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	return idx, nil
}
