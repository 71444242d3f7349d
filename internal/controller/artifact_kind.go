package controller

import (
	"context"
	"encoding/json"
	"strings"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/scan"
)

// notApplicableReason: VulnerabilitiesScanned is False because the digest is not a container
// image; it is final (a digest never changes).
const notApplicableReason = "NotApplicable"

// notAnImage says what a manifest is when it is not a container image, from its body: the
// artifactType it declares (OCI image-spec 1.1 "Guidelines for Artifact Usage"), else its config's
// media type (a Helm chart's application/vnd.cncf.helm.config.v1+json, a WASM module's
// application/vnd.wasm.config.v0+json, ...). "" for an image, an index, or a body it cannot read
// (the scan then decides).
func notAnImage(body []byte, mediaType string) string {
	if strings.Contains(mediaType, "index") || strings.Contains(mediaType, "manifest.list") {
		return ""
	}
	var m struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
		Config       struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
	}
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	if strings.Contains(m.MediaType, "index") || strings.Contains(m.MediaType, "manifest.list") {
		return ""
	}
	switch {
	case m.ArtifactType != "" && !scan.ImageConfigTypes[m.ArtifactType]:
		return m.ArtifactType
	case m.Config.MediaType != "" && !scan.ImageConfigTypes[m.Config.MediaType]:
		return m.Config.MediaType
	}
	return ""
}

// artifactKind reads the digest's manifest (usually from the listing's, no request; else one GET
// that the scanner's read then reuses) and says what it is: kind is notAnImage of it ("" for an
// image or an index with platform images; an index with none is not an image either), platforms
// are an index's platform images (scan.Platforms; nil for a single image). A manifest that cannot
// be read gives neither: the scan then decides.
func artifactKind(ctx context.Context, rc *registry.Client, ia *v1alpha1.ImageAttestation) (kind string, platforms []scan.Platform) {
	body, mediaType, err := rc.Manifest(ctx, ia.Spec.Repository, ia.Spec.Digest)
	if err != nil {
		return "", nil
	}
	if kind := notAnImage(body, mediaType); kind != "" {
		return kind, nil
	}
	platforms, isIndex := scan.Platforms(body, mediaType)
	if isIndex && len(platforms) == 0 {
		return "an index with no platform image, only attestations or artifacts", nil
	}
	return "", platforms
}
