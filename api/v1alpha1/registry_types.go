package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RegistryProvider names the registry's API beyond the OCI distribution API.
// +kubebuilder:validation:Enum=Generic;Harbor
type RegistryProvider string

const (
	// ProviderGeneric is any registry that speaks the OCI distribution API
	// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md).
	ProviderGeneric RegistryProvider = "Generic"
	// ProviderHarbor is a Harbor v2 registry; its v2.0 admin API is used for listing and write-back.
	ProviderHarbor RegistryProvider = "Harbor"
)

// RegistrySpec is a registry endpoint, its credentials, what to watch in it and how often.
// +kubebuilder:validation:XValidation:rule="!isURL(self.url) || url(self.url).getScheme() != 'http' || (has(self.insecure) && self.insecure)",message="plain http:// needs insecure: true"
type RegistrySpec struct {
	// URL of the registry's API root, with scheme and host and no path, e.g.
	// `https://registry.example.com` or `http://127.0.0.1:5000`. Plain `http://` needs
	// `insecure: true` and a loopback host, unless the manager runs with `--allow-insecure-registries`.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''",message="url must be an absolute http:// or https:// URL with a host"
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || (url(self).getEscapedPath() in ['', '/'] && url(self).getQuery().size() == 0)",message="url must not carry a path or query"
	// +kubebuilder:validation:XValidation:rule="!self.contains('@')",message="url must not carry credentials: use secretRef"
	// +required
	URL string `json:"url"`

	// Provider selects the registry's API: `Generic` (OCI distribution only) or `Harbor`.
	// +kubebuilder:default=Generic
	// +optional
	Provider RegistryProvider `json:"provider,omitempty"`

	// SecretRef names the Secret with the registry credentials, in this namespace: type
	// `kubernetes.io/dockerconfigjson` (an entry for the registry host) or `kubernetes.io/basic-auth`
	// (`username` and `password`). Without it the registry is read anonymously.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`

	// CertSecretRef names a Secret in this namespace whose `ca.crt` key holds PEM CA certificates to
	// trust for the registry's TLS, in addition to the system roots.
	// +optional
	CertSecretRef *LocalObjectReference `json:"certSecretRef,omitempty"`

	// Insecure allows plain http (for a loopback host, or any host when the manager runs with
	// `--allow-insecure-registries`). TLS verification is never switched off: use certSecretRef.
	// +optional
	Insecure bool `json:"insecure,omitempty"`

	// Repositories selects the repositories to watch: doublestar patterns over the names listed by the
	// registry's catalog, or an explicit list of names for registries that offer no catalog.
	// +optional
	Repositories RegistryRepositories `json:"repositories,omitempty"`

	// Interval between two listings of the registry (a Go duration such as `10m`; from 30s to 168h,
	// so that the listing, the safety net behind every other trigger, runs at least weekly).
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s')",message="interval must be at least 30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('168h')",message="interval must be at most 168h"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// Timeout for one listing pass, covering authentication and every request (a Go duration; default
	// 5m; from 1s to 1h). A pass holds one of the Registry controller's workers for its length; a
	// catalog too large for one pass is resumed by the next (status.listing.continueAfter), so a
	// longer timeout is never needed.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="timeout must be between 1s and 1h"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// Suspend stops listing the registry; existing ImageAttestations are kept as they are.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Requests is the request budget Portcullis spends on this registry: listing, signature
	// verification and scanning share it. The defaults suit a self-hosted registry (CNCF
	// Distribution, Harbor); set them below a hosted registry's published limits.
	// +optional
	Requests *RequestBudget `json:"requests,omitempty"`

	// Notifications turns on the push receiver: the registry calls the manager on push and delete
	// (CNCF Distribution notifications, Harbor webhooks, or a generic HMAC-signed payload), and a
	// pushed image has its verdict seconds later instead of at the next listing, which can then run
	// rarely (docs/registries.md, "Verdicts at push time").
	// +optional
	Notifications *NotificationsSpec `json:"notifications,omitempty"`
}

// NotificationsSpec configures a Registry's push receiver.
type NotificationsSpec struct {
	// SecretRef names a Secret, in the Registry's namespace, whose key `token` authenticates
	// deliveries: `Authorization: Bearer <token>` (Distribution's endpoint headers, Harbor's Auth
	// Header), or an HMAC-SHA256 of the body keyed with it in `X-Portcullis-Signature:
	// sha256=<hex>` (required for the generic payload).
	// +required
	SecretRef LocalObjectReference `json:"secretRef"`
}

// RequestBudget bounds the requests Portcullis makes to one registry.
type RequestBudget struct {
	// PerSecond caps the rate of HTTP requests to the registry, across listing, verification and
	// scanning (a token bucket whose burst equals the rate). Default 100. A 429 or 503 answer is
	// retried after its Retry-After (or an exponential backoff) and never counts as a verdict.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	PerSecond *int32 `json:"perSecond,omitempty"`

	// Concurrency is how many listing requests (tag lists and tag resolutions) are in flight at once.
	// Default 8.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	Concurrency *int32 `json:"concurrency,omitempty"`
}

// RegistryRepositories selects repositories by pattern, or names them when the registry has no
// catalog (`/v2/_catalog`), as Docker Hub and GHCR do not.
// +kubebuilder:validation:XValidation:rule="!has(self.names) || (!has(self.include) && !has(self.exclude))",message="names and include/exclude are mutually exclusive"
type RegistryRepositories struct {
	PatternSelector `json:",inline"`

	// Names lists the repositories to watch, e.g. `library/nginx`; when set the catalog is not read.
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern="^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*$"
	// +listType=set
	// +optional
	Names []string `json:"names,omitempty"`
}

// RegistryStatus is the observed state of a Registry.
type RegistryStatus struct {
	// Conditions: Ready, Reconciling and Stalled (kstatus).
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ObservedGeneration is the generation of the spec whose outcome (Ready or Stalled) the conditions
	// report; -1 before the first final outcome.
	// +kubebuilder:default=-1
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// LastSyncTime is when a listing last changed the inventory or the status. A listing that finds
	// nothing new writes nothing (not even this field), so an unchanged registry costs the API server
	// no write; the metric portcullis_registry_requests_total shows the listings themselves.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`

	// RepositoryCount is the number of repositories the last listing found (after
	// spec.repositories).
	// +optional
	RepositoryCount int32 `json:"repositoryCount,omitempty"`

	// ImageCount is the number of ImageAttestations the Registry keeps: distinct (repository, digest)
	// pairs that some RepositoryPolicy selects.
	// +optional
	ImageCount int32 `json:"imageCount,omitempty"`

	// Listing is the progress of a listing that did not finish within spec.timeout: the next pass
	// resumes the catalog after `continueAfter` instead of starting over. Absent once a listing
	// finishes.
	// +optional
	Listing *ListingProgress `json:"listing,omitempty"`

	// Notifications reports the push receiver (spec.notifications).
	// +optional
	Notifications *NotificationsStatus `json:"notifications,omitempty"`
}

// NotificationsStatus reports a Registry's push receiver. Counters are written at most every 10
// seconds.
type NotificationsStatus struct {
	// Path is the receiver's URL path on the manager's receiver port (--receiver-bind-address):
	// configure the registry to POST to http(s)://<receiver Service>/<path>.
	// +kubebuilder:validation:MaxLength=128
	Path string `json:"path"`
	// LastReceivedTime is when the last delivery was accepted.
	// +optional
	LastReceivedTime *metav1.Time `json:"lastReceivedTime,omitempty"`
	// Accepted and Refused count deliveries since the manager started (refused: a wrong token
	// or signature, an oversize or malformed body, over the rate limit).
	// +optional
	Accepted int64 `json:"accepted,omitempty"`
	// +optional
	Refused int64 `json:"refused,omitempty"`
}

// ListingProgress is where an unfinished listing of a registry's catalog stands.
type ListingProgress struct {
	// ContinueAfter is the last repository, in catalog order, whose tags were all listed and whose
	// ImageAttestations were written; the next pass asks the catalog for the names after it
	// (`/v2/_catalog?last=...`).
	// +kubebuilder:validation:MaxLength=256
	// +optional
	ContinueAfter string `json:"continueAfter,omitempty"`

	// StartedAt is when the listing that is being resumed began.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`

	// Repositories is how many repositories that listing has covered so far.
	// +optional
	Repositories int32 `json:"repositories,omitempty"`
}

// Registry is a container registry endpoint that Portcullis lists and enforces policy on.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=portcullis
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.spec.provider`
// +kubebuilder:printcolumn:name="Repositories",type=integer,JSONPath=`.status.repositoryCount`
// +kubebuilder:printcolumn:name="Images",type=integer,JSONPath=`.status.imageCount`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Registry struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired state.
	// +required
	Spec RegistrySpec `json:"spec"`

	// Status is the observed state.
	// +kubebuilder:default={}
	// +optional
	Status RegistryStatus `json:"status,omitempty"`
}

// RegistryList is a list of Registry.
// +kubebuilder:object:root=true
type RegistryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Registry `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Registry{}, &RegistryList{})
}
