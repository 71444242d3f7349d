package scan

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestEnsureDBScannerFails: when the scanner process itself fails (killed at the deadline, crashed,
// not there), an older DB in the folder still serves (stale) and only a folder without one is fatal.
func TestEnsureDBScannerFails(t *testing.T) {
	withDB := t.TempDir()
	for _, f := range []string{"trivy.db", "metadata.json"} {
		if err := os.WriteFile(filepath.Join(withDB, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	failing := WorkerConfig{Command: []string{"/bin/false"}}
	if stale, err := EnsureDB(context.Background(), failing, withDB, []string{"127.0.0.1:1/db:2"}, true); err == nil || !stale {
		t.Errorf("an older DB and a failed scanner: stale %v, %v; want stale with the error", stale, err)
	}
	if stale, err := EnsureDB(context.Background(), failing, t.TempDir(), []string{"127.0.0.1:1/db:2"}, true); err == nil || stale {
		t.Errorf("no DB and a failed scanner: stale %v, %v; want a fatal error", stale, err)
	}
}
