package trivyscan

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
	"github.com/portcullis-dev/portcullis/internal/scan/vulndb"
)

// TestThousandsOfFindings scans a real image with a generated DB of 5,000 advisories that all match
// its golang.org/x/text v0.3.5: every one is reported (the controller's summaries, tested for 15,000
// findings, keep the ImageAttestation small).
func TestThousandsOfFindings(t *testing.T) {
	osv := t.TempDir()
	for i := range 5000 {
		rec := map[string]any{
			"schema_version": "1.3.1", "id": fmt.Sprintf("GO-2099-%04d", i), "modified": "2026-01-01T00:00:00Z",
			"published": "2026-01-01T00:00:00Z", "aliases": []string{fmt.Sprintf("CVE-2099-%05d", i)},
			"summary": "generated advisory " + strings.Repeat("x", 200), "details": strings.Repeat("details ", 50),
			"affected": []any{map[string]any{"package": map[string]any{"name": "golang.org/x/text", "ecosystem": "Go"},
				"ranges": []any{map[string]any{"type": "SEMVER", "events": []any{map[string]any{"introduced": "0"}, map[string]any{"fixed": "0.3.7"}}}}}},
			"database_specific": map[string]any{"url": "https://pkg.go.dev/vuln/GO-2099", "review_status": "REVIEWED"},
		}
		data, _ := json.Marshal(rec)
		if err := os.WriteFile(filepath.Join(osv, fmt.Sprintf("GO-2099-%04d.json", i)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	if _, err := vulndb.BuildGoOSV(osv, out); err != nil {
		t.Fatal(err)
	}
	reg := newCountingRegistry(t)
	img, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	target := reg.push(t, "big", img)
	res, err := openTrivy(t, filepath.Join(out, "db"), 0).Scan(context.Background(), target, scan.Access{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Vulnerabilities) != 5000 {
		t.Fatalf("the generated DB must flag 5,000 findings, got %d", len(res.Vulnerabilities))
	}
}
