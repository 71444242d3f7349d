package trivyscan

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aquasecurity/trivy/pkg/clock"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/portcullis-dev/portcullis/internal/egress"
	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
)

// pushDB publishes dbDir (trivy.db + metadata.json, with NextUpdate set to nextUpdate) as trivy's
// DB OCI artifact: one db.tar.gz layer of media type application/vnd.aquasec.trivy.db.layer.v1.tar+gzip.
func pushDB(t *testing.T, host, dbDir string, nextUpdate time.Time) {
	t.Helper()
	var md map[string]any
	raw, err := os.ReadFile(filepath.Join(dbDir, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &md); err != nil {
		t.Fatal(err)
	}
	md["NextUpdate"] = nextUpdate.UTC().Format(time.RFC3339)
	mdJSON, _ := json.Marshal(md)
	dbBytes, err := os.ReadFile(filepath.Join(dbDir, "trivy.db"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for n, c := range map[string][]byte{"trivy.db": dbBytes, "metadata.json": mdJSON} {
		_ = tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(c)
	}
	_ = tw.Close()
	_ = gz.Close()
	layer := static.NewLayer(buf.Bytes(), types.MediaType("application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"))
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, Annotations: map[string]string{"org.opencontainers.image.title": "db.tar.gz"}})
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/aquasec/trivy-db:2", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateDB downloads the DB from a mirror (trivy's OCI artifact format), scans with it, and
// when the mirror's DB is due for an update, downloads and reloads it while the scanner stays up.
func TestUpdateDB(t *testing.T) {
	reg := newCountingRegistry(t)
	repo := []string{reg.host + "/aquasec/trivy-db:2"}
	built := buildDB(t)
	pushDB(t, reg.host, built, time.Now().Add(time.Hour))

	dbDir := filepath.Join(t.TempDir(), "db")
	ctx := context.Background()
	updated, err := UpdateDB(ctx, dbDir, repo, true)
	if err != nil || !updated {
		t.Fatalf("first UpdateDB = %v, %v; want a download", updated, err)
	}
	if err := InstallDB(dbDir); err != nil { // the first install, as the manager does
		t.Fatal(err)
	}
	tr, err := NewTrivy(dbDir, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	first := tr.DBUpdatedAt()

	if updated, err := UpdateDB(ctx, dbDir, repo, true); err != nil || updated {
		t.Fatalf("a fresh DB must not be downloaded again: %v, %v", updated, err)
	}
	// The same through a scanner process (this test binary), as the manager asks: no download, and
	// a mirror that cannot be reached is an error that names it.
	if updated, err := scan.UpdateDB(ctx, scan.WorkerConfig{}, dbDir, repo, true); err != nil || updated {
		t.Fatalf("scanner process: a fresh DB must not be downloaded again: %v, %v", updated, err)
	}
	if _, err := scan.UpdateDB(ctx, scan.WorkerConfig{}, filepath.Join(t.TempDir(), "db"), []string{"127.0.0.1:1/aquasec/trivy-db:2"}, true); err == nil ||
		!strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("scanner process, unreachable mirror: %v", err)
	}

	// Two hours later the DB is past NextUpdate and not downloaded within the last hour.
	later := clock.With(ctx, time.Now().Add(2*time.Hour))
	time.Sleep(1100 * time.Millisecond) // a rebuilt DB gets a later UpdatedAt (second precision)
	pushDB(t, reg.host, buildDB(t), time.Now().Add(3*time.Hour))
	updated, err = UpdateDB(later, dbDir, repo, true)
	if err != nil || !updated {
		t.Fatalf("UpdateDB when due = %v, %v; want a download", updated, err)
	}
	if err := tr.Reload(); err != nil {
		t.Fatal(err)
	}
	if !tr.DBUpdatedAt().After(first) {
		t.Fatalf("the reloaded DB is not newer: %v then %v", first, tr.DBUpdatedAt())
	}
}

// TestReloadFailureKeepsTheOldDB: a downloaded DB that does not open is rolled back, and the scanner
// keeps working on the previous DB.
func TestReloadFailureKeepsTheOldDB(t *testing.T) {
	dbDir := buildDB(t)
	tr, err := NewTrivy(dbDir, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	before := tr.DBUpdatedAt()
	next := dbDir + ".new"
	if err := os.MkdirAll(next, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, c := range map[string]string{"trivy.db": "not a bolt database", "metadata.json": `{"Version":2}`} {
		if err := os.WriteFile(filepath.Join(next, f), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Reload(); err == nil {
		t.Fatal("a corrupt DB must not load")
	}
	if !tr.DBUpdatedAt().Equal(before) {
		t.Fatalf("DB time changed after a failed reload: %v -> %v", before, tr.DBUpdatedAt())
	}
	reg := newCountingRegistry(t)
	img, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Scan(context.Background(), reg.push(t, "app", img), scan.Access{Insecure: true})
	if err != nil || len(res.Vulnerabilities) == 0 {
		t.Fatalf("the previous DB must still serve scans: %d findings, %v", len(res.Vulnerabilities), err)
	}
}

// TestEnsureDB: at start, a DB is downloaded and installed when there is none; when the mirror cannot
// be reached, an older DB in the cache is kept (stale, scans go on with it) and no DB at all is an
// error that names the repository. The same in this process and, as the manager does it, through
// scan.EnsureDB in a scanner process (this test binary).
func TestEnsureDB(t *testing.T) {
	t.Run("in process", func(t *testing.T) { testEnsureDB(t, EnsureDB) })
	t.Run("scanner process", func(t *testing.T) {
		testEnsureDB(t, func(ctx context.Context, dir string, repos []string, insecure bool) (bool, error) {
			return scan.EnsureDB(ctx, scan.WorkerConfig{}, dir, repos, insecure)
		})
	})
	t.Run("listening scanner", func(t *testing.T) {
		at := scan.WorkerConfig{Address: startListener(t).socket}
		testEnsureDB(t, func(ctx context.Context, dir string, repos []string, insecure bool) (bool, error) {
			return scan.EnsureDB(ctx, at, dir, repos, insecure)
		})
	})
}

func testEnsureDB(t *testing.T, EnsureDB func(context.Context, string, []string, bool) (bool, error)) {
	ctx := context.Background()
	reg := newCountingRegistry(t)
	pushDB(t, reg.host, buildDB(t), time.Now().Add(time.Hour))
	dbDir := filepath.Join(t.TempDir(), "db")
	if stale, err := EnsureDB(ctx, dbDir, []string{reg.host + "/aquasec/trivy-db:2"}, true); err != nil || stale || !HasDB(dbDir) {
		t.Fatalf("EnsureDB from a mirror = stale %v, %v (HasDB %v); want a DB installed", stale, err, HasDB(dbDir))
	}

	unreachable := []string{"127.0.0.1:1/aquasec/trivy-db:2"}
	if stale, err := EnsureDB(ctx, filepath.Join(t.TempDir(), "db"), unreachable, true); err == nil || stale ||
		!strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("EnsureDB with no DB and no mirror = stale %v, %v; want a fatal error naming the repository", stale, err)
	}

	old := buildDB(t) // due for an update: NextUpdate passed
	raw, err := os.ReadFile(filepath.Join(old, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var md map[string]any
	if err := json.Unmarshal(raw, &md); err != nil {
		t.Fatal(err)
	}
	md["NextUpdate"] = time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339)
	raw, _ = json.Marshal(md)
	if err := os.WriteFile(filepath.Join(old, "metadata.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	stale, err := EnsureDB(ctx, old, unreachable, true)
	if err == nil || !stale {
		t.Fatalf("EnsureDB with an old DB and no mirror = stale %v, %v; want stale with the download error", stale, err)
	}
	tr, err := NewTrivy(old, t.TempDir(), 0)
	if err != nil {
		t.Fatalf("the older DB must still open: %v", err)
	}
	defer tr.Close()
	if tr.DBUpdatedAt().IsZero() {
		t.Fatal("the older DB has no build time")
	}
}

// TestDBDownloadEgress: the DB download in a scanner process dials under the manager's egress
// policy: with the default denials a mirror on loopback is refused before any byte is sent (no
// blob fetched), and the same request with loopback allowed downloads the DB.
func TestDBDownloadEgress(t *testing.T) {
	reg := newCountingRegistry(t)
	repo := []string{reg.host + "/aquasec/trivy-db:2"}
	pushDB(t, reg.host, buildDB(t), time.Now().Add(time.Hour))
	ctx := context.Background()
	denied := scan.WorkerConfig{Egress: &scan.EgressRules{Deny: []string{"10.96.0.0/12"}}}
	dir := filepath.Join(t.TempDir(), "db")
	if _, err := scan.UpdateDB(ctx, denied, dir, repo, true); err == nil || !strings.Contains(err.Error(), egress.ErrNotAllowed.Error()) {
		t.Fatalf("a loopback mirror under the default denials: %v; want the egress refusal", err)
	}
	reg.mu.Lock()
	fetched := len(reg.blobs)
	reg.mu.Unlock()
	if fetched != 0 {
		t.Fatalf("%d blobs fetched from a refused mirror", fetched)
	}
	allowed := scan.WorkerConfig{Egress: &scan.EgressRules{Allow: []string{"127.0.0.0/8"}, Deny: []string{"10.96.0.0/12"}}}
	if updated, err := scan.UpdateDB(ctx, allowed, dir, repo, true); err != nil || !updated {
		t.Fatalf("with loopback allowed: %v, %v; want a download", updated, err)
	}
}
