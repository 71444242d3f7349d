package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestSeedFilesMatchesPush: the same images pushed through the API of a real CNCF Distribution
// and written by seedFiles leave the same files with the same contents in its storage, and a
// Distribution started on the written folder serves every image by tag with its digest.
func TestSeedFilesMatchesPush(t *testing.T) {
	bin := os.Getenv(registrytest.BinEnv)
	if bin == "" {
		t.Fatalf("%s is not set: run the tests with `make test`", registrytest.BinEnv)
	}
	for _, tiny := range []bool{true, false} {
		t.Run(map[bool]string{true: "tiny", false: "two-layer"}[tiny], func(t *testing.T) {
			const n, repos = 7, 3
			made, err := images(tiny)
			if err != nil {
				t.Fatal(err)
			}
			// Each image once: a two-layer image has a random layer of its own per call.
			var mu sync.Mutex
			memo := map[int]v1.Image{}
			image := func(i int) (v1.Image, error) {
				mu.Lock()
				defer mu.Unlock()
				if img, ok := memo[i]; ok {
					return img, nil
				}
				img, err := made(i)
				memo[i] = img
				return img, err
			}
			ctx := context.Background()
			pushedDir, writtenDir := t.TempDir(), t.TempDir()
			dist, stop, err := registrytest.Start(bin, registrytest.Options{Dir: pushedDir})
			if err != nil {
				t.Fatal(err)
			}
			err = seed(ctx, dist.Host, n, repos, image)
			stop()
			if err != nil {
				t.Fatal(err)
			}
			if err := seedFiles(ctx, filepath.Join(writtenDir, "data"), n, repos, image); err != nil {
				t.Fatal(err)
			}
			pushed, written := storageFiles(t, filepath.Join(pushedDir, "data")), storageFiles(t, filepath.Join(writtenDir, "data"))
			if len(pushed) == 0 {
				t.Fatal("the push left no file in the registry's storage")
			}
			for path, data := range pushed {
				if got, ok := written[path]; !ok {
					t.Errorf("seedFiles did not write %s", path)
				} else if got != data {
					t.Errorf("%s: seedFiles wrote %q, the registry %q", path, got, data)
				}
			}
			for path := range written {
				if _, ok := pushed[path]; !ok {
					t.Errorf("seedFiles wrote %s, which a push does not", path)
				}
			}

			dist, stop, err = registrytest.Start(bin, registrytest.Options{Dir: writtenDir})
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			for i := range n {
				repo, tag := imageTag(i, repos)
				ref, err := name.NewTag(dist.Host+"/"+repo+":"+tag, name.Insecure)
				if err != nil {
					t.Fatal(err)
				}
				got, err := remote.Image(ref)
				if err != nil {
					t.Fatalf("image %d from the written storage: %v", i, err)
				}
				want, _ := image(i)
				gd, _ := got.Digest()
				wd, _ := want.Digest()
				if gd != wd {
					t.Fatalf("image %d: digest %s, want %s", i, gd, wd)
				}
				if _, err := got.ConfigFile(); err != nil { // a blob GET through the repository's links
					t.Fatalf("image %d: config: %v", i, err)
				}
			}
		})
	}
}

// storageFiles maps the regular files under root (relative, slash-separated) to their contents,
// leaving out upload sessions.
func storageFiles(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if strings.Contains(rel, "_uploads") {
			return nil
		}
		data, err := os.ReadFile(path)
		files[filepath.ToSlash(rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
