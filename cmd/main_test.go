package main

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

func TestParseFlags(t *testing.T) {
	f, _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), []string{
		"--allowed-registry-hosts", " *.corp.example, ,registry.internal:5000 ",
		"--allow-insecure-registries", "--scan-concurrency=4", "--cache-dir=/tmp/c",
		"--vulndb-repository", "mirror.example.test/aquasec/trivy-db:2, ghcr.io/aquasecurity/trivy-db:2", "--vulndb-refresh=6h",
	})
	if err != nil {
		t.Fatal(err)
	}
	o := f.options()
	if want := []string{"*.corp.example", "registry.internal:5000"}; !reflect.DeepEqual(o.AllowedRegistryHosts, want) {
		t.Errorf("AllowedRegistryHosts = %q, want %q", o.AllowedRegistryHosts, want)
	}
	if want := []string{"mirror.example.test/aquasec/trivy-db:2", "ghcr.io/aquasecurity/trivy-db:2"}; !reflect.DeepEqual(o.VulnDBRepositories, want) || o.VulnDBRefresh.Hours() != 6 {
		t.Errorf("DB repositories %q refresh %s", o.VulnDBRepositories, o.VulnDBRefresh)
	}
	if !o.AllowInsecureRegistries || o.ScanConcurrency != 4 || o.CacheDir != "/tmp/c" {
		t.Errorf("options = %+v", o)
	}
	if !f.secureMetrics || f.leaderElect {
		t.Errorf("defaults: metrics must be secure and leader election off, got %+v", f)
	}
}

func TestParseFlagsRejectsBadConcurrency(t *testing.T) {
	_, _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--scan-concurrency=0"})
	if err == nil || !strings.Contains(err.Error(), "--scan-concurrency") {
		t.Fatalf("want an error naming --scan-concurrency, got %v", err)
	}
}

func TestSchemeHasOurKinds(t *testing.T) {
	s := newScheme()
	for _, k := range []string{"Registry", "RepositoryPolicy", "ImageAttestation"} {
		if !s.Recognizes(v1alpha1.GroupVersion.WithKind(k)) {
			t.Errorf("scheme does not know %s", k)
		}
	}
}

// TestParseFlagsFromEnvironment: every flag can come from PORTCULLIS_<FLAG>, the command line wins,
// WATCH_NAMESPACE (OLM's target namespaces) feeds --watch-namespaces, and a bad value names the
// variable.
func TestParseFlagsFromEnvironment(t *testing.T) {
	t.Setenv("PORTCULLIS_ALLOWED_REGISTRY_HOSTS", "*.corp.example")
	t.Setenv("PORTCULLIS_SCAN_CONCURRENCY", "3")
	t.Setenv("PORTCULLIS_CACHE_DIR", "/from/env")
	t.Setenv("WATCH_NAMESPACE", "team-a,team-b")
	f, _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--cache-dir=/from/args"})
	if err != nil {
		t.Fatal(err)
	}
	o := f.options()
	if !reflect.DeepEqual(o.AllowedRegistryHosts, []string{"*.corp.example"}) || o.ScanConcurrency != 3 || o.CacheDir != "/from/args" {
		t.Errorf("options = %+v", o)
	}
	c := cacheOptions(splitList(f.watchNamespaces))
	if len(c.DefaultNamespaces) != 2 || c.DefaultNamespaces["team-b"].LabelSelector != nil {
		t.Errorf("cache namespaces %v, want team-a and team-b", c.DefaultNamespaces)
	}
	if len(cacheOptions(nil).DefaultNamespaces) != 0 {
		t.Error("no namespaces must watch all")
	}

	t.Setenv("PORTCULLIS_SCAN_CONCURRENCY", "many")
	if _, _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), nil); err == nil || !strings.Contains(err.Error(), "PORTCULLIS_SCAN_CONCURRENCY") {
		t.Fatalf("want an error naming PORTCULLIS_SCAN_CONCURRENCY, got %v", err)
	}
}

// TestManagerDoesNotLinkTheScanner: trivy's analysers, scanners and DB client live only in
// cmd/portcullis-scanner, so the manager's memory holds none of them (the trivy-operator report
// types, a few of trivy's plain types, are the exception).
func TestManagerDoesNotLinkTheScanner(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/aquasecurity/trivy/pkg/fanal/analyzer", "github.com/aquasecurity/trivy/pkg/scan/local",
			"github.com/aquasecurity/trivy/pkg/db", "github.com/portcullis-dev/portcullis/internal/scan/trivyscan"} {
			if pkg == banned {
				t.Errorf("the manager links %s", pkg)
			}
		}
	}
}

func TestScannerBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "scanner")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := scannerBinary(bin); err != nil || got != bin {
		t.Errorf("explicit path: %q, %v", got, err)
	}
	if _, err := scannerBinary(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "--scanner-binary") {
		t.Errorf("missing explicit path: %v", err)
	}
	t.Setenv("PATH", dir)
	if _, err := scannerBinary(""); err == nil || !strings.Contains(err.Error(), "no portcullis-scanner binary") {
		t.Errorf("none beside the test binary or on PATH: %v", err)
	}
	if err := os.Rename(bin, filepath.Join(dir, scannerName)); err != nil {
		t.Fatal(err)
	}
	if got, err := scannerBinary(""); err != nil || got != filepath.Join(dir, scannerName) {
		t.Errorf("on PATH: %q, %v", got, err)
	}
}
