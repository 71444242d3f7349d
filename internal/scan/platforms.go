package scan

import (
	"encoding/json"
	"strings"
)

// Platform is one platform image of an index: OCI image-spec "Image Index" manifests[].platform,
// written os/architecture[/variant] as docker and crane do, and the platform manifest's digest.
type Platform struct {
	Platform string
	Digest   string
}

// ImageConfigTypes are the config media types of container images (OCI image-spec "Image
// Configuration"; Docker image manifest v2 schema 2). An artifactType among them (go-containerregistry
// writes the config's type there) still names an image.
var ImageConfigTypes = map[string]bool{
	"application/vnd.oci.image.config.v1+json":       true,
	"application/vnd.docker.container.image.v1+json": true,
}

// attestationType is the annotation BuildKit puts on the attestation manifests (SBOM, provenance)
// it adds to an index, with platform unknown/unknown (docker buildx "Attestation storage").
const attestationType = "vnd.docker.reference.type"

// Platforms reads an OCI image index or Docker manifest list (body, with the media type the
// registry served) and lists its platform images in index order. isIndex is false for anything else
// (a single image: scanned as it is). Left out, because they are not platforms a container runs on:
// attestation manifests (platform unknown/unknown, or the vnd.docker.reference.type annotation),
// entries that are not image manifests (nested indexes, artifacts with an artifactType that is not
// an image config type), and
// digests listed twice.
func Platforms(body []byte, mediaType string) (ps []Platform, isIndex bool) {
	var ix struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			MediaType    string            `json:"mediaType"`
			Digest       string            `json:"digest"`
			ArtifactType string            `json:"artifactType"`
			Annotations  map[string]string `json:"annotations"`
			Platform     *struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
				Variant      string `json:"variant"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	if json.Unmarshal(body, &ix) != nil {
		return nil, false
	}
	if !isIndexType(mediaType) && !isIndexType(ix.MediaType) {
		return nil, false
	}
	seen := map[string]bool{}
	for _, m := range ix.Manifests {
		switch {
		case m.Digest == "" || seen[m.Digest]:
			continue
		case m.MediaType != "" && !strings.Contains(m.MediaType, "manifest"), isIndexType(m.MediaType):
			continue // not an image manifest
		case (m.ArtifactType != "" && !ImageConfigTypes[m.ArtifactType]) || m.Annotations[attestationType] != "":
			continue
		case m.Platform == nil || m.Platform.OS == "unknown" || m.Platform.Architecture == "unknown" || m.Platform.OS == "" || m.Platform.Architecture == "":
			continue
		}
		seen[m.Digest] = true
		p := m.Platform.OS + "/" + m.Platform.Architecture
		if m.Platform.Variant != "" {
			p += "/" + m.Platform.Variant
		}
		ps = append(ps, Platform{Platform: p, Digest: m.Digest})
	}
	return ps, true
}

func isIndexType(mt string) bool {
	return strings.Contains(mt, "image.index") || strings.Contains(mt, "manifest.list")
}

// Merge combines the scans of an index's platforms into the one result an index's verdict is
// decided on. A finding on several platforms counts once: vulnerabilities by (ID, package,
// installed version), secrets by (rule, path, line), misconfigurations by ID. So every count is at
// least the worst platform's, and a threshold that one platform exceeds fails the index. OS is the
// first platform's when every platform detected one, else "" (a platform with no OS is not
// assessed for OS packages, and requireOS must see that); EscapingEntries sums the platforms that
// read layers (-1 when none did); DBUpdatedAt is the oldest (a DB reload between platforms makes
// the digest due again); Scanner is the first's.
func Merge(results []Result) Result {
	if len(results) == 0 {
		return Result{}
	}
	out := Result{Scanner: results[0].Scanner, DBUpdatedAt: results[0].DBUpdatedAt, OS: results[0].OS, EscapingEntries: -1}
	type vkey struct{ id, pkg, version string }
	type skey struct {
		rule, path string
		line       int
	}
	vs, ss, ms := map[vkey]bool{}, map[skey]bool{}, map[string]bool{}
	for _, r := range results {
		if r.OS == "" {
			out.OS = ""
		}
		if r.DBUpdatedAt.Before(out.DBUpdatedAt) {
			out.DBUpdatedAt = r.DBUpdatedAt
		}
		if r.EscapingEntries >= 0 {
			out.EscapingEntries = max(out.EscapingEntries, 0) + r.EscapingEntries
		}
		for _, v := range r.Vulnerabilities {
			if k := (vkey{v.ID, v.Package, v.InstalledVersion}); !vs[k] {
				vs[k] = true
				out.Vulnerabilities = append(out.Vulnerabilities, v)
			}
		}
		for _, s := range r.Secrets {
			if k := (skey{s.RuleID, s.Path, s.Line}); !ss[k] {
				ss[k] = true
				out.Secrets = append(out.Secrets, s)
			}
		}
		for _, m := range r.Misconfigurations {
			if !ms[m.ID] {
				ms[m.ID] = true
				out.Misconfigurations = append(out.Misconfigurations, m)
			}
		}
	}
	return out
}
