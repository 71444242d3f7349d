package trivyscan

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
)

// listener is a listening scanner process (this test binary with scan.ListenEnv), as the scanner
// container runs it.
type listener struct {
	socket string
	cmd    *exec.Cmd
}

// startListener starts a listening scanner on a new socket; it is killed when the test ends.
func startListener(t *testing.T) *listener {
	t.Helper()
	dir, err := os.MkdirTemp("", "pcscan") // short: a socket path holds at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	l := &listener{socket: filepath.Join(dir, "worker.sock")}
	l.start(t)
	return l
}

func (l *listener) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	// Only what a scanner container has: no kubeconfig, no manager configuration.
	cmd.Env = []string{scan.ListenEnv + "=" + l.socket, "HOME=" + filepath.Dir(l.socket), "PATH=" + os.Getenv("PATH")}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l.cmd = cmd
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// TestListeningScanner scans through a scanner that runs on its own and listens on a Unix socket
// (the scanner container): the manager side connects, has it open the DB, scans a real image with a
// real CVE, and when the scanner dies mid-scan the scan fails with scan.ErrWorkerExited and the
// next scan reaches the restarted scanner (as the kubelet restarts a container). A second manager
// that names another DB is refused: one scanner holds one DB.
func TestListeningScanner(t *testing.T) {
	reg := newCountingRegistry(t)
	vuln, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.push(t, "team-a/server", vuln)
	l := startListener(t)
	cfg := scan.WorkerConfig{Address: l.socket, DBDir: buildDB(t), CacheDir: t.TempDir()}
	s, err := scan.NewIsolated(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if s.DBUpdatedAt().IsZero() {
		t.Fatal("no DB build time from the scanner")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	found := func(res scan.Result) bool {
		for _, v := range res.Vulnerabilities {
			if v.ID == "CVE-2021-38561" {
				return true
			}
		}
		return false
	}
	res, err := s.Scan(ctx, ref, scan.Access{Insecure: true})
	if err != nil || !found(res) {
		t.Fatalf("scan through the listening scanner: CVE found %v, %v", err == nil && found(res), err)
	}

	other := cfg
	other.DBDir = t.TempDir()
	if _, err := scan.NewIsolated(other); err == nil || !strings.Contains(err.Error(), "already has the DB") {
		t.Errorf("a second DB in the same scanner: %v", err)
	}

	// The scanner dies while a scan waits on a registry that never answers.
	entered, release := make(chan struct{}, 1), make(chan struct{})
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}))
	t.Cleanup(stall.Close)
	t.Cleanup(func() { close(release) })
	errc := make(chan error, 1)
	go func() {
		_, err := s.Scan(ctx, strings.TrimPrefix(stall.URL, "http://")+"/team-a/slow:v1", scan.Access{Insecure: true})
		errc <- err
	}()
	<-entered
	_ = l.cmd.Process.Kill()
	_ = l.cmd.Wait() // gone for good, its files closed, before the "container" restarts
	if err := <-errc; !errors.Is(err, scan.ErrWorkerExited) || !strings.Contains(err.Error(), "connection to the scanner") {
		t.Fatalf("scan in flight when the scanner died: %v; want scan.ErrWorkerExited", err)
	}
	l.start(t)
	if res, err := s.Scan(ctx, ref, scan.Access{Insecure: true}); err != nil || !found(res) {
		t.Fatalf("scan after the scanner restarted: %v", err)
	}
}
