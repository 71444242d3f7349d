package trivyscan

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

// Reload swaps in the DB that UpdateDB left in dbDir+".new": scans finish first, the folders are
// swapped by rename, and on any failure the previous DB is put back and re-opened, so the scanner is
// never left without a DB. Later scans see a newer DBUpdatedAt and rescan.
func (t *Trivy) Reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	next, old := t.dbDir+".new", t.dbDir+".old"
	if _, err := os.Stat(filepath.Join(next, "trivy.db")); err != nil {
		return fmt.Errorf("no downloaded DB to load: %w", err)
	}
	_ = os.RemoveAll(old)
	if err := db.Close(); err != nil {
		return err
	}
	restore := func(cause error) error {
		_ = os.RemoveAll(t.dbDir)
		_ = os.Rename(old, t.dbDir)
		if err := db.Init(t.dbDir); err != nil {
			return fmt.Errorf("%w; re-opening the previous DB also failed: %w", cause, err)
		}
		return cause
	}
	if err := os.Rename(t.dbDir, old); err != nil {
		_ = db.Init(t.dbDir)
		return fmt.Errorf("setting the current DB aside: %w", err)
	}
	if err := os.Rename(next, t.dbDir); err != nil {
		return restore(fmt.Errorf("installing the new DB: %w", err))
	}
	if err := db.Init(t.dbDir); err != nil {
		return restore(fmt.Errorf("opening the new DB: %w", err))
	}
	_ = os.RemoveAll(old)
	t.storeDBTime()
	return nil
}

// EnsureDB prepares dbDir for the first scans at start: it downloads and installs a DB when dbDir has
// none or the one it has is due (UpdateDB). When the download fails but dbDir already holds a DB (a
// persistent cache volume, or a pod restart), the older DB is kept and the error is returned with
// stale=true: scanning goes on and the caller retries later. With no DB at all the error is fatal
// (stale=false).
func EnsureDB(ctx context.Context, dbDir string, repositories []string, insecure bool) (stale bool, err error) {
	updated, err := UpdateDB(ctx, dbDir, repositories, insecure)
	if err != nil {
		if HasDB(dbDir) {
			return true, err
		}
		return false, err
	}
	if updated {
		return false, InstallDB(dbDir)
	}
	return false, nil
}

// HasDB reports whether dbDir holds a trivy DB (trivy.db and metadata.json).
func HasDB(dbDir string) bool {
	for _, f := range []string{"trivy.db", "metadata.json"} {
		if fi, err := os.Stat(filepath.Join(dbDir, f)); err != nil || fi.Size() == 0 {
			return false
		}
	}
	return true
}

// InstallDB makes the DB that UpdateDB downloaded into dbDir+".new" the one in dbDir, for the first
// start (no DB open yet).
func InstallDB(dbDir string) error {
	if err := os.RemoveAll(dbDir); err != nil {
		return err
	}
	if err := os.Rename(dbDir+".new", dbDir); err != nil {
		return fmt.Errorf("installing the new DB: %w", err)
	}
	return nil
}
