package scan

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/portcullis-dev/portcullis/internal/scan/vulndb"
)

// goBinary compiles a small Go program against golang.org/x/text v0.3.5 (GO-2021-0113 /
// CVE-2021-38561, fixed in 0.3.7), so the binary carries that module in its build info.
func goBinary(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":  "module example.test/server\n\ngo 1.22\n\nrequire golang.org/x/text v0.3.5\n",
		"main.go": "package main\n\nimport (\n\t\"fmt\"\n\n\t\"golang.org/x/text/language\"\n)\n\nfunc main() { fmt.Println(language.English) }\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-o", "server", "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOEXPERIMENT=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "server"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// layer is a tar layer holding files (path -> content).
func layer(t *testing.T, files map[string][]byte) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for p, c := range files {
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

// TestTrivyScan builds a DB from the shared Go vulnerability database, pushes an image with a real
// vulnerable Go binary and a planted cloud access key, scans it in-process, and checks the real IDs.
func TestTrivyScan(t *testing.T) {
	dbOut := t.TempDir()
	if _, err := vulndb.BuildGoOSV(filepath.Join("..", "..", "..", "shared", "vulndata", "go-osv"), dbOut); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	// A key in AWS's documented format, built so that no line contains the word trivy ignores.
	awsKey := "AKIA" + "QWERTYUIOPASDFGH"
	img, err := mutate.AppendLayers(empty.Image,
		layer(t, map[string][]byte{"app/server": goBinary(t)}),
		layer(t, map[string][]byte{"app/config/settings.env": []byte("AWS_ACCESS_KEY_ID=" + awsKey + "\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY\n")}))
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/team-a/server:v1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()

	tr, err := NewTrivy(filepath.Join(dbOut, "db"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.Scan(context.Background(), host+"/team-a/server@"+d.String(), Access{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	var found *Vulnerability
	for i, v := range res.Vulnerabilities {
		if v.ID == "CVE-2021-38561" {
			found = &res.Vulnerabilities[i]
		}
	}
	if found == nil {
		t.Fatalf("CVE-2021-38561 (golang.org/x/text v0.3.5) not reported; got %+v", res.Vulnerabilities)
	}
	if found.Package != "golang.org/x/text" || found.InstalledVersion != "v0.3.5" || found.FixedVersion != "0.3.7" || found.Severity != "UNKNOWN" {
		t.Errorf("finding %+v: want golang.org/x/text v0.3.5 fixed in 0.3.7, severity UNKNOWN (the Go DB gives none)", *found)
	}
	// (The module version comes from the binary's build info: "unknown" in a test binary.)
	if !strings.HasPrefix(res.Scanner, "trivy ") || res.DBUpdatedAt.IsZero() {
		t.Errorf("scanner %q, DB time %v", res.Scanner, res.DBUpdatedAt)
	}
	var secret bool
	for _, s := range res.Secrets {
		if s.RuleID == "aws-access-key-id" && strings.Contains(s.Path, "settings.env") {
			secret = true
		}
	}
	if !secret {
		t.Errorf("the planted AWS access key was not found: %+v", res.Secrets)
	}
	t.Logf("%d vulnerabilities, %d secrets", len(res.Vulnerabilities), len(res.Secrets))
}
