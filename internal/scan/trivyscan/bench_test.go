package trivyscan

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
	"github.com/portcullis-dev/portcullis/internal/scan/vulndb"
)

// BenchmarkScan100 scans 100 images that share a base layer (a real vulnerable Go binary) and differ
// in one small layer: in-process with a cold layer cache, in-process again with the cache warm, and
// with one `trivy image` CLI process per image sharing a cache (the obvious alternative). It reports
// each time and the ratio CLI / warm in-process.
//
//	make bench   (builds the trivy CLI into the tool cache once; never part of CI)
func BenchmarkScan100(b *testing.B) {
	trivyBin := os.Getenv("PORTCULLIS_TRIVY_BIN")
	if trivyBin == "" {
		b.Fatal("PORTCULLIS_TRIVY_BIN is not set: run `make bench`")
	}
	dbRoot := b.TempDir()
	if _, err := vulndb.BuildGoOSV(filepath.Join("..", "..", "..", vulndb.ShippedOSV), dbRoot); err != nil {
		b.Fatal(err)
	}
	dbDir := filepath.Join(dbRoot, "db")
	reg := newCountingRegistry(b)
	base := scantest.Layer(b, map[string][]byte{"app/server": scantest.VulnerableGoBinary(b)})
	const n = 100
	refs := make([]string, n)
	for i := range n {
		unique := make([]byte, 1024)
		_, _ = rand.Read(unique)
		img, err := mutate.AppendLayers(empty.Image, base, scantest.Layer(b, map[string][]byte{"app/data.bin": unique}))
		if err != nil {
			b.Fatal(err)
		}
		ref, _ := name.ParseReference(fmt.Sprintf("%s/bench/app-%03d:v1", reg.host, i), name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			b.Fatal(err)
		}
		d, _ := img.Digest()
		refs[i] = ref.Context().String() + "@" + d.String()
	}
	// The CLI gets the same DB in its own cache dir.
	cliCache := b.TempDir()
	if err := os.MkdirAll(filepath.Join(cliCache, "db"), 0o755); err != nil {
		b.Fatal(err)
	}
	for _, f := range []string{"trivy.db", "metadata.json"} {
		data, err := os.ReadFile(filepath.Join(dbDir, f))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cliCache, "db", f), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	var cold, warm, cli time.Duration
	b.ResetTimer()
	for range b.N {
		tr, err := NewTrivy(dbDir, b.TempDir(), 0)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for _, r := range refs {
			if _, err := tr.Scan(ctx, r, scan.Access{Insecure: true}); err != nil {
				b.Fatal(err)
			}
		}
		cold += time.Since(start)
		start = time.Now()
		for _, r := range refs {
			if _, err := tr.Scan(ctx, r, scan.Access{Insecure: true, SizeChecked: true}); err != nil {
				b.Fatal(err)
			}
		}
		warm += time.Since(start)
		_ = tr.Close()

		start = time.Now()
		for _, r := range refs {
			cmd := exec.Command(trivyBin, "image", "--cache-dir", cliCache, "--skip-db-update", "--skip-java-db-update",
				"--offline-scan", "--insecure", "--image-src", "remote", "--scanners", "vuln,secret", "--quiet",
				"--skip-version-check", "--format", "json", "--output", os.DevNull, r)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("trivy image %s: %v\n%s", r, err, out)
			}
		}
		cli += time.Since(start)
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(b.N) }
	b.ReportMetric(per(cold), "inprocess-cold-ms/100")
	b.ReportMetric(per(warm), "inprocess-warm-ms/100")
	b.ReportMetric(per(cli), "cli-ms/100")
	b.ReportMetric(float64(cli)/float64(warm), "cli/inprocess-warm")
}
