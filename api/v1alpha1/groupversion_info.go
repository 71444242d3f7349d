// Package v1alpha1 contains the API of Portcullis, group registry.portcullis.dev, version v1alpha1:
// Registry (a registry endpoint to watch), RepositoryPolicy (rules for the repositories it matches) and
// ImageAttestation (the verdict for one image digest).
//
// +kubebuilder:object:generate=true
// +groupName=registry.portcullis.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "registry.portcullis.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
