package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// seedFiles writes images 0..n-1 (see images) straight into the storage of a CNCF Distribution whose
// filesystem driver has rootdirectory root, in the layout Distribution's own storage writes
// (distribution/registry/storage/paths.go):
//
//	docker/registry/v2/blobs/sha256/<hex[:2]>/<hex>/data                               every blob, once
//	docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link                   config and layers
//	docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link      the manifest
//	docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//	docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link
//
// where a link holds the digest ("sha256:<hex>"). Distribution keeps no index besides these files
// (the catalog walks the repositories folder), so the registry serves the images as if they had been
// pushed, at a small fraction of the cost of pushing them: N=100000 pushes take over an hour here.
// TestSeedFilesMatchesPush checks the layout against images pushed through the API.
func seedFiles(ctx context.Context, root string, n, repos int, image func(int) (v1.Image, error)) error {
	v2 := filepath.Join(root, "docker", "registry", "v2")
	return seedEach(ctx, n, func(_ context.Context, i int) error {
		img, err := image(i)
		if err != nil {
			return err
		}
		repo, tag := imageTag(i, repos)
		r := filepath.Join(v2, "repositories", filepath.FromSlash(repo))
		link := func(path string, d v1.Hash) error { return writeFile(path, []byte(d.String())) }
		manifest, err := img.RawManifest()
		if err != nil {
			return err
		}
		md, err := img.Digest()
		if err != nil {
			return err
		}
		config, err := img.RawConfigFile()
		if err != nil {
			return err
		}
		cd, err := img.ConfigName()
		if err != nil {
			return err
		}
		for _, b := range []struct {
			d    v1.Hash
			data []byte
		}{{md, manifest}, {cd, config}} {
			if err := writeBlob(v2, b.d, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.data)), nil }); err != nil {
				return err
			}
		}
		if err := link(filepath.Join(r, "_layers", "sha256", cd.Hex, "link"), cd); err != nil {
			return err
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			ld, err := l.Digest()
			if err != nil {
				return err
			}
			if err := writeBlob(v2, ld, l.Compressed); err != nil {
				return err
			}
			if err := link(filepath.Join(r, "_layers", "sha256", ld.Hex, "link"), ld); err != nil {
				return err
			}
		}
		m := filepath.Join(r, "_manifests")
		if err := link(filepath.Join(m, "revisions", "sha256", md.Hex, "link"), md); err != nil {
			return err
		}
		if err := link(filepath.Join(m, "tags", tag, "index", "sha256", md.Hex, "link"), md); err != nil {
			return err
		}
		return link(filepath.Join(m, "tags", tag, "current", "link"), md)
	})
}

// writeBlob stores a blob under v2/blobs unless it is there already.
func writeBlob(v2 string, d v1.Hash, open func() (io.ReadCloser, error)) error {
	path := filepath.Join(v2, "blobs", d.Algorithm, d.Hex[:2], d.Hex, "data")
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	return writeFile(path, data)
}

// writeFile writes data to path, making its folders, through a temporary file renamed into place
// (a reader never sees half a file, and two writers of one blob write the same bytes).
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".seed-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
