package scan

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/google/go-containerregistry/pkg/name"

	tdb "github.com/aquasecurity/trivy/pkg/db"
	ftypes "github.com/aquasecurity/trivy/pkg/fanal/types"
)

// DefaultDBRepositories are where trivy itself downloads its vulnerability DB from.
var DefaultDBRepositories = []string{tdb.DefaultGCRRepository, tdb.DefaultGHCRRepository}

// UpdateDB downloads trivy's vulnerability DB (the OCI artifact trivy publishes, or a mirror of it)
// into dbDir+".new" when dbDir has none or the one it has is due (metadata NextUpdate passed, and not
// downloaded within the last hour, as trivy decides). It reports whether a new DB is ready for Reload.
// repositories are tried in order; insecure allows plain http (a mirror on loopback).
func UpdateDB(ctx context.Context, dbDir string, repositories []string, insecure bool) (bool, error) {
	var refs []name.Reference
	for _, r := range repositories {
		opts := []name.Option{}
		if insecure {
			opts = append(opts, name.Insecure)
		}
		ref, err := name.ParseReference(r, opts...)
		if err != nil {
			return false, fmt.Errorf("DB repository %q: %w", r, err)
		}
		refs = append(refs, ref)
	}
	client := tdb.NewClient(dbDir, true, tdb.WithDBRepository(refs))
	needed, err := client.NeedsUpdate(ctx, trivyVersion(), false)
	if err != nil || !needed {
		return false, err
	}
	next := dbDir + ".new"
	if err := os.RemoveAll(next); err != nil {
		return false, err
	}
	if err := tdb.NewClient(next, true, tdb.WithDBRepository(refs)).Download(ctx, next, ftypes.RegistryOptions{Insecure: insecure}); err != nil {
		return false, fmt.Errorf("downloading the vulnerability DB: %w", err)
	}
	return true, nil
}

// Reload swaps in the DB that UpdateDB left in dbDir+".new": scans wait while the files are
// replaced, then use the new DB; later scans see a newer DBUpdatedAt and rescan.
func (t *Trivy) Reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := t.dbDir + ".new"
	if _, err := os.Stat(filepath.Join(next, "trivy.db")); err != nil {
		return fmt.Errorf("no downloaded DB to load: %w", err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	if err := InstallDB(t.dbDir); err != nil {
		return err
	}
	return db.Init(t.dbDir)
}

// InstallDB moves the DB that UpdateDB downloaded into dbDir+".new" into dbDir. The DB must not be
// open (Reload closes it first).
func InstallDB(dbDir string) error {
	next := dbDir + ".new"
	if err := os.MkdirAll(dbDir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"trivy.db", "metadata.json"} {
		if err := os.Rename(filepath.Join(next, f), filepath.Join(dbDir, f)); err != nil {
			return fmt.Errorf("installing the new DB: %w", err)
		}
	}
	return os.RemoveAll(next)
}
