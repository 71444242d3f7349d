package demo

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// goProgram is a small Go program and the module versions it is compiled against.
type goProgram struct {
	name    string
	require string // go.mod require lines
	main    string
}

// buildGo compiles prog for linux/goarch into cacheDir (once per program, version set and
// architecture) and returns the binary. Modules come through the Go module proxy the first time.
func buildGo(cacheDir string, prog goProgram, goarch string, log io.Writer) ([]byte, error) {
	gomod := "module demo.portcullis.dev/" + prog.name + "\n\ngo 1.22\n\nrequire (\n" + prog.require + ")\n"
	sum := sha256.Sum256([]byte(gomod + prog.main + goarch))
	out := filepath.Join(cacheDir, "bin", prog.name+"-"+goarch+"-"+hex.EncodeToString(sum[:6]))
	if data, err := os.ReadFile(out); err == nil {
		return data, nil
	}
	fmt.Fprintf(log, "demo: compiling %s for linux/%s against %s\n", prog.name, goarch, strings.Join(strings.Fields(prog.require), " "))
	dir, err := os.MkdirTemp("", "portcullis-demo-src-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(prog.main), 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-trimpath", "-o", out + ".tmp", "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=-mod=mod", "GOEXPERIMENT=")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go %s for %s: %w\n%s", args[0], prog.name, err, b)
		}
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// debianRoot downloads the Debian packages with `apt-get download` (cached in cacheDir/debs),
// unpacks them with `dpkg-deb -x` into a fresh folder, and writes /var/lib/dpkg/status from their
// control files, as dpkg would after installing them. It returns the folder.
func debianRoot(cacheDir string, pkgs []string, log io.Writer) (string, error) {
	debs := filepath.Join(cacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", err
	}
	var files []string
	for _, p := range pkgs {
		matches, _ := filepath.Glob(filepath.Join(debs, p+"_*.deb"))
		if len(matches) == 0 {
			fmt.Fprintf(log, "demo: apt-get download %s\n", p)
			cmd := exec.Command("apt-get", "download", p)
			cmd.Dir = debs
			if b, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("apt-get download %s (run `apt-get update` first?): %w\n%s", p, err, b)
			}
			matches, _ = filepath.Glob(filepath.Join(debs, p+"_*.deb"))
		}
		if len(matches) == 0 {
			return "", fmt.Errorf("apt-get download %s left no .deb in %s", p, debs)
		}
		files = append(files, matches[0])
	}
	root, err := os.MkdirTemp("", "portcullis-demo-debian-")
	if err != nil {
		return "", err
	}
	var status bytes.Buffer
	for _, f := range files {
		if b, err := exec.Command("dpkg-deb", "-x", f, root).CombinedOutput(); err != nil {
			return "", fmt.Errorf("dpkg-deb -x %s: %w\n%s", f, err, b)
		}
		control, err := exec.Command("dpkg-deb", "-f", f).Output()
		if err != nil {
			return "", fmt.Errorf("dpkg-deb -f %s: %w", f, err)
		}
		// dpkg's status file is the control file with a Status field after Package.
		lines := strings.SplitAfter(strings.TrimRight(string(control), "\n")+"\n", "\n")
		for _, l := range lines {
			status.WriteString(l)
			if strings.HasPrefix(l, "Package:") {
				status.WriteString("Status: install ok installed\n")
			}
		}
		status.WriteString("\n")
	}
	dpkg := filepath.Join(root, "var", "lib", "dpkg")
	if err := os.MkdirAll(dpkg, 0o755); err != nil {
		return "", err
	}
	return root, os.WriteFile(filepath.Join(dpkg, "status"), status.Bytes(), 0o644)
}

// dirLayer is a tar layer of the folder's regular files, directories and symlinks, in path order.
func dirLayer(root string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var paths []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err == nil && p != root {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	for _, p := range paths {
		info, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return nil, err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(root, p)
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

// filesLayer is a tar layer holding files (path -> content, mode 0755), in path order.
func filesLayer(files map[string][]byte) (v1.Layer, error) {
	dir, err := os.MkdirTemp("", "portcullis-demo-files-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(full, c, 0o755); err != nil {
			return nil, err
		}
	}
	return dirLayer(dir)
}
