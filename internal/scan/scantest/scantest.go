// Package scantest makes real test images for scanning: a Go binary compiled against a known
// vulnerable module version, and layers from file maps.
package scantest

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var (
	binOnce sync.Once
	binData []byte
	binErr  error
)

// VulnerableGoBinary compiles (once per test process) a small Go program against golang.org/x/text
// v0.3.5 (GO-2021-0113 / CVE-2021-38561, fixed in 0.3.7), so the binary's build info lists that
// module. The module comes through the Go module proxy the first time.
func VulnerableGoBinary(t testing.TB) []byte {
	t.Helper()
	binOnce.Do(func() { binData, binErr = buildVulnerable() })
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binData
}

func buildVulnerable() ([]byte, error) {
	dir, err := os.MkdirTemp("", "portcullis-vulnbin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	files := map[string]string{
		"go.mod":  "module example.test/server\n\ngo 1.22\n\nrequire golang.org/x/text v0.3.5\n",
		"main.go": "package main\n\nimport (\n\t\"fmt\"\n\n\t\"golang.org/x/text/language\"\n)\n\nfunc main() { fmt.Println(language.English) }\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			return nil, err
		}
	}
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-o", "server", "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOEXPERIMENT=")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, &buildError{args: args, out: string(out), err: err}
		}
	}
	return os.ReadFile(filepath.Join(dir, "server"))
}

type buildError struct {
	args []string
	out  string
	err  error
}

func (e *buildError) Error() string { return "go " + e.args[0] + ": " + e.err.Error() + "\n" + e.out }

// Layer is a tar layer holding files (path -> content), written in path order.
func Layer(t testing.TB, files map[string][]byte) v1.Layer {
	t.Helper()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		c := files[p]
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o755, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// RootDockerfileHistory gives img (one layer) the history a Dockerfile build leaves: the base layer's ADD
// and CMD, then the image's own instructions, with no USER (so it runs as root) and no HEALTHCHECK.
// trivy rebuilds the Dockerfile from this history to check the image config.
func RootDockerfileHistory(img v1.Image) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config.Cmd = []string{"/bin/sh"}
	cf.History = []v1.History{
		{CreatedBy: "/bin/sh -c #(nop) ADD file:4b03b5f551e3fbdf47ec609712007327828f7530cc3455c43bbcdcaf449a75a9 in / "},
		{CreatedBy: `/bin/sh -c #(nop)  CMD ["bash"]`, EmptyLayer: true},
		{CreatedBy: "/bin/sh -c #(nop)  EXPOSE 8080", EmptyLayer: true},
		{CreatedBy: `/bin/sh -c #(nop)  CMD ["/bin/sh"]`, EmptyLayer: true},
	}
	return mutate.ConfigFile(img, cf)
}
