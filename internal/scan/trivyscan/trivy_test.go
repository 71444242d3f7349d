package trivyscan

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
)

// TestTrivyScan builds a DB from the shipped Go vulnerability database, pushes an image with a real
// vulnerable Go binary and a planted cloud access key, scans it in-process, and checks the real IDs.
func TestTrivyScan(t *testing.T) {
	reg := newCountingRegistry(t)

	// A key in AWS's documented format, built so that no line contains the word trivy ignores.
	awsKey := "AKIA" + "QWERTYUIOPASDFGH"
	img, err := mutate.AppendLayers(empty.Image,
		scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}),
		scantest.Layer(t, map[string][]byte{"app/config/settings.env": []byte("AWS_ACCESS_KEY_ID=" + awsKey + "\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY\n")}))
	if err != nil {
		t.Fatal(err)
	}
	target := reg.push(t, "team-a/server", img)
	res, err := openTrivy(t, buildDB(t), 0).Scan(context.Background(), target, scan.Access{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	var found *scan.Vulnerability
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

// TestTrivyImageConfigAndOS scans an image whose config runs as root with no healthcheck, and whose
// layer is laid out as Debian (os-release + dpkg status): the image-config checks fail with trivy's
// IDs and the OS is detected.
func TestTrivyImageConfigAndOS(t *testing.T) {
	reg := newCountingRegistry(t)

	dpkgStatus := "Package: zlib1g\nStatus: install ok installed\nPriority: optional\nSection: libs\nInstalled-Size: 168\n" +
		"Maintainer: Mark Brown <broonie@debian.org>\nArchitecture: amd64\nMulti-Arch: same\nSource: zlib\nVersion: 1:1.2.13.dfsg-1\n" +
		"Description: compression library - runtime\n\n"
	base, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{
		"etc/os-release":      []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n"),
		"etc/debian_version":  []byte("12.5\n"),
		"var/lib/dpkg/status": []byte(dpkgStatus),
	}))
	if err != nil {
		t.Fatal(err)
	}
	// A config as a Dockerfile build leaves it: no USER (root) and no HEALTHCHECK.
	img, err := scantest.RootDockerfileHistory(base)
	if err != nil {
		t.Fatal(err)
	}
	target := reg.push(t, "base/debian", img)
	res, err := openTrivy(t, buildDB(t), 0).Scan(context.Background(), target, scan.Access{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.OS, "debian 12") {
		t.Errorf("OS %q, want debian 12", res.OS)
	}
	ids := map[string]bool{}
	for _, m := range res.Misconfigurations {
		ids[m.ID] = true
	}
	for _, want := range []string{"DS-0002", "DS-0026"} { // root user; no HEALTHCHECK
		if !ids[want] {
			t.Errorf("misconfiguration %s not reported; got %+v", want, res.Misconfigurations)
		}
	}
}
