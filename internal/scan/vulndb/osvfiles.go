package vulndb

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxAdvisorySize bounds one advisory read from an archive (the largest Go record is about 60 KiB).
const maxAdvisorySize = 4 << 20

// isArchive reports whether src names a gzip-compressed tar archive by its suffix.
func isArchive(src string) bool {
	return strings.HasSuffix(src, ".tar.gz") || strings.HasSuffix(src, ".tgz")
}

// copyAdvisories copies the *.json files of the folder src into dst and returns how many.
func copyAdvisories(src, dst string) (int, error) {
	files, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil {
		return 0, err
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), data, 0o600); err != nil {
			return 0, err
		}
	}
	return len(files), nil
}

// extractAdvisories writes the regular `*.json` entries of the .tar.gz archive src into dst, flat,
// under their base names, and returns how many. Other entries are skipped; an entry over
// maxAdvisorySize or a damaged archive fails with an error naming src.
func extractAdvisories(src, dst string) (int, error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", src, err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", src, err)
		}
		base := path.Base(h.Name)
		if h.Typeflag != tar.TypeReg || !strings.HasSuffix(base, ".json") || strings.HasPrefix(base, ".") {
			continue
		}
		if h.Size > maxAdvisorySize {
			return 0, fmt.Errorf("reading %s: %s is %d bytes, over the %d-byte limit of one advisory", src, h.Name, h.Size, maxAdvisorySize)
		}
		data, err := io.ReadAll(io.LimitReader(tr, maxAdvisorySize))
		if err != nil {
			return 0, fmt.Errorf("reading %s: %s: %w", src, h.Name, err)
		}
		if err := os.WriteFile(filepath.Join(dst, base), data, 0o600); err != nil {
			return 0, err
		}
		n++
	}
}
