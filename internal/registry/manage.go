package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// maxCreatedChildren caps how many platform images of an index Created reads.
const maxCreatedChildren = 8

// Created returns when the image repository@digest was built: the "created" of its image config
// (OCI image spec, config "created"; Docker's the same). For an index it is the newest "created"
// among its first 8 platform images. It is zero when the config has none; many reproducible builds
// stamp the Unix epoch instead, which callers must treat as unknown too. Errors are classified as in
// Resolve.
func (c *Client) Created(ctx context.Context, repository, digest string) (_ time.Time, err error) {
	op := fmt.Sprintf("reading the creation time of %s@%s", repository, digest)
	ref, err := c.ref(repository, "@"+digest)
	if err != nil {
		return time.Time{}, classify(op, err)
	}
	p, done, err := c.pull()
	if err != nil {
		return time.Time{}, err
	}
	defer func() { err = done(err) }()
	desc, err := p.Get(ctx, ref)
	if err != nil {
		return time.Time{}, classify(op, err)
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return time.Time{}, classify(op, err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return time.Time{}, classify(op, err)
		}
		return cfg.Created.Time, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return time.Time{}, classify(op, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return time.Time{}, classify(op, err)
	}
	var newest time.Time
	for i, m := range im.Manifests {
		if i == maxCreatedChildren {
			break
		}
		if !m.MediaType.IsImage() {
			continue
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			return time.Time{}, classify(op, err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return time.Time{}, classify(op, err)
		}
		if cfg.Created.After(newest) {
			newest = cfg.Created.Time
		}
	}
	return newest, nil
}

// DeleteManifest deletes the manifest repository@digest, and with it every tag pointing at it
// (distribution spec, "Deleting Manifests": DELETE /v2/<name>/manifests/<digest>). Deleting a digest
// that is already gone is ErrNotFound, which callers resuming a plan take as done; a registry with
// deletion switched off answers 405, ErrUnsupported. Only digests are accepted, never tags.
func (c *Client) DeleteManifest(ctx context.Context, repository, digest string) error {
	op := fmt.Sprintf("deleting %s@%s", repository, digest)
	ref, err := c.ref(repository, "@"+digest)
	if err != nil {
		return classify(op, err)
	}
	opts := append(append([]remote.Option{}, c.remoteOpts...), remote.WithContext(ctx))
	return classify(op, remote.Delete(ref, opts...))
}
