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

// ShippedOSV is the Go vulnerability database shipped with the project, relative to the project's
// root: OSV records as a .tar.gz, CC-BY-4.0 by the Go authors (third_party/go-vulndb/README.md).
const ShippedOSV = "third_party/go-vulndb/go-osv.tar.gz"

// FarFuture is how long a built DB claims to stay fresh (metadata NextUpdate), so trivy never tries
// to replace it by downloading.
const FarFuture = 100 * 365 * 24 * time.Hour

// BuildGoOSV writes trivy.db and metadata.json into outDir from the OSV advisories in src: a folder
// of JSON files (one file per advisory, e.g. GO-2021-0113.json) or a gzip-compressed tar archive
// (`.tar.gz` or `.tgz`, as third_party/go-vulndb/go-osv.tar.gz ships them) whose `*.json` entries are
// the advisories, in any folder of the archive. It returns the number of advisories read, and fails
// with "no OSV advisories" when there are none. The DB is built in outDir through trivy-db's global
// handle, which is closed on return.
func BuildGoOSV(src, outDir string) (int, error) {
	// trivy-db's govulndb source reads <root>/govulndb/data/osv: lay the advisories out there.
	root, err := os.MkdirTemp("", "portcullis-vulndb-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(root)
	// (Copied, not linked: trivy-db walks the folder without following symlinks.)
	osvDir := filepath.Join(root, "govulndb", "data", "osv")
	if err := os.MkdirAll(osvDir, 0o755); err != nil {
		return 0, err
	}
	var n int
	if isArchive(src) {
		n, err = extractAdvisories(src, osvDir)
	} else {
		n, err = copyAdvisories(src, osvDir)
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("no OSV advisories (*.json) in %s", src)
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
	return n, errors.Join(err, db.Close())
}
