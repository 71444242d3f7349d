package trivyscan

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aquasecurity/trivy/pkg/cache"
	"github.com/aquasecurity/trivy/pkg/fanal/types"
)

// TestLockedCacheConcurrentGrowth reads trivy's on-disk cache while another goroutine grows it with
// large blobs, as concurrent scans do. Unlocked, trivy's FSCache decodes values after their bbolt
// transaction, and a remap while decoding kills the process with SIGSEGV (seen in the e2e suite);
// through lockedCache every read decodes its value intact.
func TestLockedCacheConcurrentGrowth(t *testing.T) {
	inner, _, err := cache.New(cache.Options{Backend: "fs", CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c := &lockedCache{inner: inner}
	defer c.Close()
	ctx := context.Background()
	want := types.ArtifactInfo{SchemaVersion: 1, Architecture: "amd64", OS: "linux", DockerVersion: strings.Repeat("v", 2000)}
	if err := c.PutArtifact(ctx, "sha256:artifact", want); err != nil {
		t.Fatal(err)
	}
	stop := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	wg.Add(1)
	go func() { // the writer: every blob grows the file, so bbolt remaps it again and again
		defer wg.Done()
		big := strings.Repeat("x", 256<<10)
		for i := 0; time.Now().Before(stop); i++ {
			if err := c.PutBlob(ctx, fmt.Sprintf("sha256:%064d", i), types.BlobInfo{SchemaVersion: 2, Digest: big}); err != nil {
				errs <- err
				return
			}
		}
	}()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				got, err := c.GetArtifact(ctx, "sha256:artifact")
				if err != nil || got.DockerVersion != want.DockerVersion || got.OS != "linux" {
					errs <- fmt.Errorf("read %+v, %v", got.OS, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
