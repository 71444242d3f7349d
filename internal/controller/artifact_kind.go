package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// notApplicableReason: VulnerabilitiesScanned is False because the digest is not a container
// image; it is final (a digest never changes).
const notApplicableReason = "NotApplicable"

// imageConfigTypes are the config media types of container images (OCI image-spec "Image
// Configuration"; Docker image manifest v2 schema 2).
var imageConfigTypes = map[string]bool{
	"application/vnd.oci.image.config.v1+json":       true,
	"application/vnd.docker.container.image.v1+json": true,
}

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
	case m.ArtifactType != "" && !imageConfigTypes[m.ArtifactType]:
		return m.ArtifactType
	case m.Config.MediaType != "" && !imageConfigTypes[m.Config.MediaType]:
		return m.Config.MediaType
	}
	return ""
}

// artifactKind reads the digest's manifest (usually from the listing's, no request; else one GET
// that the scanner's read then reuses) and returns notAnImage of it.
func artifactKind(ctx context.Context, rc *registry.Client, ia *v1alpha1.ImageAttestation) (string, error) {
	body, mediaType, err := rc.Manifest(ctx, ia.Spec.Repository, ia.Spec.Digest)
	if err != nil {
		return "", fmt.Errorf("reading the manifest: %w", err)
	}
	return notAnImage(body, mediaType), nil
}
