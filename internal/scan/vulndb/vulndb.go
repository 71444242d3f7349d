// Package vulndb builds a trivy vulnerability DB (trivy-db schema 2: `trivy.db` and
// `metadata.json`) offline from OSV advisories of the Go vulnerability database
// (https://vuln.go.dev, OSV schema), with trivy-db's own govulndb source, so air-gapped clusters,
// tests and the demo scan with real advisories and nothing tries to download.
package vulndb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/types"
	"github.com/aquasecurity/trivy-db/pkg/vulndb"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/govulndb"
)

// FarFuture is how long a built DB claims to stay fresh (metadata NextUpdate), so trivy never tries
// to replace it by downloading.
const FarFuture = 100 * 365 * 24 * time.Hour

// BuildGoOSV writes trivy.db and metadata.json into outDir from the OSV JSON files in osvDir (one
// file per advisory, e.g. GO-2021-0113.json). It returns the number of advisory files read. The DB
// is built in outDir through trivy-db's global handle, which is closed on return.
func BuildGoOSV(osvDir, outDir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 {
		return 0, fmt.Errorf("no OSV advisories (*.json) in %s", osvDir)
	}
	// trivy-db's govulndb source reads <root>/govulndb/data/osv: lay the advisories out there.
	root, err := os.MkdirTemp("", "portcullis-vulndb-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(root)
	// (Copied, not linked: trivy-db walks the folder without following symlinks.)
	src := filepath.Join(root, "govulndb", "data", "osv")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return 0, err
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(src, filepath.Base(f)), data, 0o600); err != nil {
			return 0, err
		}
	}

	dbDir := filepath.Join(outDir, "db")
	if err := os.MkdirAll(dbDir, 0o755); err != nil {
		return 0, err
	}
	if err := db.Init(dbDir); err != nil {
		return 0, fmt.Errorf("opening %s: %w", dbDir, err)
	}
	src0 := govulndb.NewVulnSrc()
	build := vulndb.New(root, dbDir, FarFuture, vulndb.WithVulnSrcs(map[types.SourceID]vulnsrc.VulnSrc{src0.Name(): src0}))
	err = build.Build([]string{string(src0.Name())})
	return len(files), errors.Join(err, db.Close())
}
