//go:build deps

// Package deps pins the libraries later parts of Portcullis are built on (trivy for scanning, cosign
// for verification, trivy-operator's API types) so that go.mod resolves the whole product together from
// the start. It is compiled only with `-tags deps` (`make check-deps`); the packages that really use a
// library import it themselves, so most packages build without GOEXPERIMENT=jsonv2.
package deps

import (
	_ "github.com/aquasecurity/trivy-operator/pkg/apis/aquasecurity/v1alpha1"
	_ "github.com/aquasecurity/trivy/pkg/commands/artifact"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/sigstore/cosign/v2/pkg/cosign"
)
