package scan

import (
	"slices"
	"testing"
	"time"
)

func TestPlatforms(t *testing.T) {
	const buildx = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a1","size":1,"artifactType":"application/vnd.oci.image.config.v1+json","platform":{"architecture":"amd64","os":"linux"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a2","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a2","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:att1","size":1,"annotations":{"vnd.docker.reference.digest":"sha256:a1","vnd.docker.reference.type":"attestation-manifest"},"platform":{"architecture":"unknown","os":"unknown"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:att2","size":1,"platform":{"architecture":"unknown","os":"unknown"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:sbom","size":1,"artifactType":"application/spdx+json","platform":{"architecture":"amd64","os":"linux"}},
	 {"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:nested","size":1,"platform":{"architecture":"amd64","os":"linux"}},
	 {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:noplatform","size":1}]}`
	const dockerList = `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
	 {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:w1","size":1,"platform":{"architecture":"amd64","os":"windows","os.version":"10.0.20348.1"}}]}`
	for _, c := range []struct {
		name, body, mediaType string
		want                  []Platform
		isIndex               bool
	}{
		{name: "buildx index with attestations", body: buildx, mediaType: "application/vnd.oci.image.index.v1+json", isIndex: true,
			want: []Platform{{"linux/amd64", "sha256:a1"}, {"linux/arm64/v8", "sha256:a2"}}},
		{name: "docker manifest list", body: dockerList, mediaType: "application/vnd.docker.distribution.manifest.list.v2+json", isIndex: true,
			want: []Platform{{"windows/amd64", "sha256:w1"}}},
		{name: "media type only in the body", body: buildx, mediaType: "", isIndex: true,
			want: []Platform{{"linux/amd64", "sha256:a1"}, {"linux/arm64/v8", "sha256:a2"}}},
		{name: "an image", body: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`,
			mediaType: "application/vnd.oci.image.manifest.v1+json"},
		{name: "only attestations", body: `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"sha256:x","platform":{"os":"unknown","architecture":"unknown"}}]}`,
			isIndex: true},
		{name: "not JSON", body: "<html>", mediaType: "application/vnd.oci.image.index.v1+json"},
	} {
		got, isIndex := Platforms([]byte(c.body), c.mediaType)
		if isIndex != c.isIndex || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, %v; want %v, %v", c.name, got, isIndex, c.want, c.isIndex)
		}
	}
}

func TestMerge(t *testing.T) {
	old, newer := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	shared := Vulnerability{ID: "CVE-1", Package: "openssl", InstalledVersion: "3.0.1", Severity: "HIGH"}
	amd := Result{Scanner: "trivy 0.74.0", DBUpdatedAt: newer, OS: "debian 12.5", EscapingEntries: 2,
		Vulnerabilities: []Vulnerability{shared, {ID: "CVE-2", Package: "zlib", InstalledVersion: "1", Severity: "CRITICAL"}},
		Secrets:         []Secret{{RuleID: "aws", Path: "/a", Line: 1}}, Misconfigurations: []Misconfiguration{{ID: "DS002"}}}
	arm := Result{Scanner: "trivy 0.74.0", DBUpdatedAt: old, OS: "debian 12.5", EscapingEntries: -1,
		Vulnerabilities: []Vulnerability{shared, {ID: "CVE-1", Package: "openssl", InstalledVersion: "3.0.2", Severity: "HIGH"}},
		Secrets:         []Secret{{RuleID: "aws", Path: "/a", Line: 1}}, Misconfigurations: []Misconfiguration{{ID: "DS002"}, {ID: "DS026"}}}
	m := Merge([]Result{amd, arm})
	if len(m.Vulnerabilities) != 3 || len(m.Secrets) != 1 || len(m.Misconfigurations) != 2 {
		t.Errorf("merged counts: %d vulnerabilities, %d secrets, %d misconfigurations; want 3, 1, 2", len(m.Vulnerabilities), len(m.Secrets), len(m.Misconfigurations))
	}
	if m.OS != "debian 12.5" || !m.DBUpdatedAt.Equal(old) || m.EscapingEntries != 2 || m.Scanner != "trivy 0.74.0" {
		t.Errorf("merged %+v", m)
	}
	noOS := arm
	noOS.OS = ""
	if m := Merge([]Result{amd, noOS}); m.OS != "" {
		t.Errorf("a platform with no OS: merged OS %q, want none", m.OS)
	}
	cached := arm
	if m := Merge([]Result{cached, cached}); m.EscapingEntries != -1 {
		t.Errorf("no layer read: EscapingEntries %d, want -1", m.EscapingEntries)
	}
	if m := Merge(nil); m.Vulnerabilities != nil || m.OS != "" {
		t.Errorf("Merge(nil) = %+v", m)
	}
}
