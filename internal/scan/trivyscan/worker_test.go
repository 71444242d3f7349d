package trivyscan

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aquasecurity/trivy/pkg/fanal/analyzer"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
)

// panicEnv makes a worker started by this test binary register panicAnalyzer first.
const panicEnv = "PORTCULLIS_TEST_PANIC_ANALYZER"

func TestMain(m *testing.M) {
	if os.Getenv(panicEnv) == "1" {
		analyzer.RegisterAnalyzer(scantest.PanicAnalyzer{})
	}
	RunWorkerIfAsked() // this test binary is also the scan worker of the scan.Isolated tests
	os.Exit(m.Run())
}

// TestIsolatedSurvivesAPanicInTrivy scans through a worker process whose trivy has an analyzer that
// panics in trivy's own goroutine: the scan fails with scan.ErrWorkerExited and the panic's message, this
// process lives on, and the next scan (in a new worker) finds the real CVE of the Go binary.
func TestIsolatedSurvivesAPanicInTrivy(t *testing.T) {
	reg := newCountingRegistry(t)
	hostile, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"data/panic-me": []byte("x")}))
	if err != nil {
		t.Fatal(err)
	}
	vuln, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	hostileRef, vulnRef := reg.push(t, "bad/hostile", hostile), reg.push(t, "team-a/server", vuln)
	s, err := scan.NewIsolated(scan.WorkerConfig{DBDir: buildDB(t), CacheDir: t.TempDir(), Env: []string{panicEnv + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	_, err = s.Scan(ctx, hostileRef, scan.Access{Insecure: true})
	if !errors.Is(err, scan.ErrWorkerExited) || !strings.Contains(err.Error(), "panic: "+scantest.PanicMessage) {
		t.Fatalf("scan of the hostile image: %v; want scan.ErrWorkerExited with the panic", err)
	}
	res, err := s.Scan(ctx, vulnRef, scan.Access{Insecure: true})
	if err != nil {
		t.Fatalf("the next scan (new worker): %v", err)
	}
	found := false
	for _, v := range res.Vulnerabilities {
		found = found || v.ID == "CVE-2021-38561"
	}
	if !found || res.DBUpdatedAt.IsZero() || !res.DBUpdatedAt.Equal(s.DBUpdatedAt()) {
		t.Errorf("result from the new worker: CVE found %v, DB time %v (parent says %v)", found, res.DBUpdatedAt, s.DBUpdatedAt())
	}
	// Reload runs in the worker: with no downloaded DB beside the open one it says so, and the worker
	// keeps its DB and goes on serving.
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "no downloaded DB to load") {
		t.Errorf("reload in the worker: %v", err)
	}
	if _, err := s.Scan(ctx, vulnRef, scan.Access{Insecure: true}); err != nil {
		t.Errorf("scan after a failed reload: %v", err)
	}
}

// TestIsolatedCancel: a scan whose context ends returns at once with the context's error, and the
// worker goes on serving.
func TestIsolatedCancel(t *testing.T) {
	reg := newCountingRegistry(t)
	ref := reg.push(t, "team-a/clean", registrytest.RandomImage(t))
	s, err := scan.NewIsolated(scan.WorkerConfig{DBDir: buildDB(t), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Scan(done, ref, scan.Access{Insecure: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled scan: %v", err)
	}
	if _, err := s.Scan(context.Background(), ref, scan.Access{Insecure: true}); err != nil {
		t.Fatalf("scan after a cancelled one: %v", err)
	}
}

// TestIsolatedWorkerCannotStart: a worker whose DB does not open exits, and the scan says why.
func TestIsolatedWorkerCannotStart(t *testing.T) {
	dbDir := buildDB(t)
	s, err := scan.NewIsolated(scan.WorkerConfig{DBDir: dbDir, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := os.Remove(filepath.Join(dbDir, "trivy.db")); err != nil {
		t.Fatal(err)
	}
	_, err = s.Scan(context.Background(), "127.0.0.1:1/none@sha256:"+strings.Repeat("0", 64), scan.Access{Insecure: true})
	if !errors.Is(err, scan.ErrWorkerExited) || !strings.Contains(err.Error(), "scan worker: vulnerability DB") {
		t.Fatalf("scan with a broken DB: %v", err)
	}
}
