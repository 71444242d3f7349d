package vulndb

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aquasecurity/trivy-db/pkg/db"
)

// shipped is the Go vulnerability database shipped with the project.
var shipped = filepath.Join("..", "..", "..", ShippedOSV)

// TestBuildGoOSV builds a DB from two real advisories and reads it back the way trivy's detector
// does: the advisory of golang.org/x/text with its fixed version, under the Go ecosystem.
func TestBuildGoOSV(t *testing.T) {
	all := t.TempDir()
	if n, err := extractAdvisories(shipped, all); err != nil || n < 4000 {
		t.Fatalf("extracting the shipped database: %d advisories, %v", n, err)
	}
	in := t.TempDir()
	for _, id := range []string{"GO-2021-0113", "GO-2022-1059"} {
		data, err := os.ReadFile(filepath.Join(all, id+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(in, id+".json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	n, err := BuildGoOSV(in, out)
	if err != nil || n != 2 {
		t.Fatalf("BuildGoOSV = %d, %v", n, err)
	}

	var md struct {
		Version    int
		NextUpdate time.Time
	}
	data, err := os.ReadFile(filepath.Join(out, "db", "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &md); err != nil || md.Version != 2 || md.NextUpdate.Before(time.Now().Add(50*365*24*time.Hour)) {
		t.Fatalf("metadata %s: version 2 and a far NextUpdate expected", data)
	}

	if err := db.Init(filepath.Join(out, "db")); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	advs, err := db.Config{}.GetAdvisories("go::", "golang.org/x/text")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range advs {
		ids = append(ids, a.VulnerabilityID)
		if a.VulnerabilityID == "CVE-2021-38561" && !slices.Contains(a.PatchedVersions, "0.3.7") {
			t.Errorf("CVE-2021-38561 must be fixed in 0.3.7: %+v", a)
		}
	}
	if !slices.Contains(ids, "CVE-2021-38561") {
		t.Fatalf("golang.org/x/text advisories %v: want CVE-2021-38561 (GO-2021-0113)", ids)
	}
	if strings.Join(ids, ",") == "" {
		t.Fatal("no advisory")
	}
}

func TestBuildGoOSVEmpty(t *testing.T) {
	if _, err := BuildGoOSV(t.TempDir(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "no OSV advisories") {
		t.Fatalf("want a clear error for an empty folder, got %v", err)
	}
}

// TestBuildGoOSVArchive builds the DB straight from the shipped archive, as `make vulndb` does.
func TestBuildGoOSVArchive(t *testing.T) {
	out := t.TempDir()
	n, err := BuildGoOSV(shipped, out)
	if err != nil || n != 4291 {
		t.Fatalf("BuildGoOSV(%s) = %d, %v; want the 4,291 shipped advisories", shipped, n, err)
	}
	if _, err := os.Stat(filepath.Join(out, "db", "trivy.db")); err != nil {
		t.Fatal(err)
	}
}

// TestBuildGoOSVBadArchive: a damaged archive or one without advisories is a clear error.
func TestBuildGoOSVBadArchive(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.tar.gz")
	if err := os.WriteFile(bad, []byte("not gzip"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildGoOSV(bad, t.TempDir()); err == nil || !strings.Contains(err.Error(), "bad.tar.gz") {
		t.Fatalf("want an error naming the archive, got %v", err)
	}
	empty := filepath.Join(dir, "empty.tgz")
	if err := os.WriteFile(empty, emptyTarGz(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildGoOSV(empty, t.TempDir()); err == nil || !strings.Contains(err.Error(), "no OSV advisories") {
		t.Fatalf("want no OSV advisories, got %v", err)
	}
}

// emptyTarGz is an empty tar archive, gzip-compressed.
func emptyTarGz(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
