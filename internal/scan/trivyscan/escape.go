package trivyscan

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	ftypes "github.com/aquasecurity/trivy/pkg/fanal/types"
)

// escapeCounter wraps an image so that every layer trivy reads is also read as tar headers, counting
// the entries whose path leaves the layer's root ("../x" after cleaning). trivy skips them (see the
// walker option in Scan); this says how many there were, without another download. Counts are kept
// per layer, so a layer read twice (size check, analysis) counts once.
type escapeCounter struct {
	ftypes.Image
	maxLayer int64 // bytes one uncompressed layer may have (0: no cap)
	mu       sync.Mutex
	counts   map[v1.Hash]int
}

func newEscapeCounter(img ftypes.Image, maxLayer int64) *escapeCounter {
	return &escapeCounter{Image: img, maxLayer: maxLayer, counts: map[v1.Hash]int{}}
}

// LayerByDiffID wraps the layer's uncompressed stream.
func (e *escapeCounter) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	l, err := e.Image.LayerByDiffID(h)
	if err != nil {
		return nil, err
	}
	return &countingLayer{Layer: l, diffID: h, owner: e}, nil
}

// total is the number of escaping entries over the layers read, or -1 when no layer was read (all
// came from the analysis cache).
func (e *escapeCounter) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.counts) == 0 {
		return -1
	}
	n := 0
	for _, c := range e.counts {
		n += c
	}
	return n
}

func (e *escapeCounter) record(h v1.Hash, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n > e.counts[h] || e.counts[h] == 0 {
		e.counts[h] = n
	}
}

// countingLayer is a pointer type with no UncompressedLayer field, as trivy's compressed-layer check
// (reflection on the layer type) expects of a remote layer.
type countingLayer struct {
	v1.Layer
	diffID v1.Hash
	owner  *escapeCounter
}

func (l *countingLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		tr := tar.NewReader(pr)
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			if escapes(hdr.Name) {
				n++
			}
		}
		_, _ = io.Copy(io.Discard, pr) // keep the tee flowing whatever the tar reader thought
		l.owner.record(l.diffID, n)
	}()
	var r io.Reader = io.TeeReader(rc, pw)
	if l.owner.maxLayer > 0 {
		// trivy writes a whole uncompressed layer to disk before its own size check: stop a
		// decompression bomb while it streams.
		r = &cappedReader{r: r, left: l.owner.maxLayer, max: l.owner.maxLayer}
	}
	return &teeCloser{Reader: r, rc: rc, pw: pw, done: done}, nil
}

// cappedReader fails once more than max bytes were read.
type cappedReader struct {
	r         io.Reader
	left, max int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, fmt.Errorf("uncompressed layer size exceeds maximum allowed size %d bytes", c.max)
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, fmt.Errorf("uncompressed layer size exceeds maximum allowed size %d bytes", c.max)
	}
	return n, err
}

// escapes reports whether a tar entry name leaves the root after cleaning, as trivy cleans it.
func escapes(name string) bool {
	p := strings.TrimLeft(path.Clean(name), "/")
	return p == ".." || strings.HasPrefix(p, "../")
}

type teeCloser struct {
	io.Reader
	rc   io.ReadCloser
	pw   *io.PipeWriter
	done chan struct{}
}

func (t *teeCloser) Close() error {
	err := t.rc.Close()
	_ = t.pw.Close()
	<-t.done
	return err
}
