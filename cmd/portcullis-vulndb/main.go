// Command portcullis-vulndb builds a trivy vulnerability DB offline from the OSV records of the Go
// vulnerability database, for air-gapped clusters, tests and the demo.
//
//	portcullis-vulndb -osv third_party/go-vulndb/go-osv.tar.gz -out .local/vulndb
//
// It writes OUT/db/trivy.db and OUT/db/metadata.json (trivy-db schema 2, NextUpdate far in the
// future so trivy never tries to download a newer one). The Go vulnerability database is licensed
// CC-BY-4.0 by the Go authors (https://go.dev/security/vuln/database).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/portcullis-dev/portcullis/internal/scan/vulndb"
)

func main() {
	osv := flag.String("osv", vulndb.ShippedOSV, "OSV records: a folder of JSON files (one advisory per file) or a .tar.gz of them.")
	out := flag.String("out", filepath.Join(".local", "vulndb"), "Output folder; the DB goes to OUT/db.")
	flag.Parse()
	start := time.Now()
	n, err := vulndb.BuildGoOSV(*osv, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "portcullis-vulndb:", err)
		os.Exit(1)
	}
	fmt.Printf("built %s from %d advisories in %s\n", filepath.Join(*out, "db"), n, time.Since(start).Round(time.Millisecond))
}
