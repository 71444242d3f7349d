package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScanningSpec sets what a trivy scan of a digest may find before the image fails the policy.
type ScanningSpec struct {
	// Vulnerabilities sets the maximum count of vulnerabilities per severity.
	// +optional
	Vulnerabilities *VulnerabilityThresholds `json:"vulnerabilities,omitempty"`

	// Secrets sets how many exposed secrets (trivy's secret scanner) an image may contain.
	// +optional
	Secrets *SecretThreshold `json:"secrets,omitempty"`

	// Misconfigurations sets the highest severity of image-config misconfiguration an image may have.
	// +optional
	Misconfigurations *MisconfigurationThreshold `json:"misconfigurations,omitempty"`

	// RequireOS fails an image in which the scan detected no operating system (reason
	// NoOSDetected): its OS packages were not assessed, so zero findings would not mean a clean
	// image. Leave it off for distroless and scratch images, whose language packages are still
	// scanned. Default false.
	// +optional
	RequireOS bool `json:"requireOS,omitempty"`

	// VEX applies signed OpenVEX documents (https://github.com/openvex/spec) to the vulnerability
	// findings before the thresholds: a finding a trusted statement says is `not_affected` or
	// `fixed` is not counted, and the ImageAttestation says which statement suppressed it.
	// +optional
	VEX *VEXSpec `json:"vex,omitempty"`

	// RescanInterval is how old a scan may get before the digest is scanned again (a Go duration;
	// default 24h; at least 1m). A vulnerability DB update also triggers a rescan.
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="rescanInterval must be at least 1m"
	// +optional
	RescanInterval *metav1.Duration `json:"rescanInterval,omitempty"`
}

// VEXSpec names who may vouch that a vulnerability does not apply.
type VEXSpec struct {
	// Authorities are names of cosign authorities (key or keyless) of spec.verification.authorities.
	// OpenVEX documents attached to the image as in-toto attestations (`cosign attest --type openvex`,
	// legacy `.att` tag or sigstore bundle referrer; predicate type `https://openvex.dev/ns...`)
	// whose statement names the digest and that one of them signed are applied. Unsigned or
	// otherwise-signed VEX documents are ignored, and listed in status.policies[].vex.ignored.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +required
	Authorities []string `json:"authorities"`
}

// VulnerabilityThresholds are the maximum counts of vulnerabilities per severity; an absent maximum
// means no limit for that severity.
type VulnerabilityThresholds struct {
	// MaxCritical is the maximum count of CRITICAL vulnerabilities.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxCritical *int32 `json:"maxCritical,omitempty"`
	// MaxHigh is the maximum count of HIGH vulnerabilities.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxHigh *int32 `json:"maxHigh,omitempty"`
	// MaxMedium is the maximum count of MEDIUM vulnerabilities.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxMedium *int32 `json:"maxMedium,omitempty"`
	// MaxLow is the maximum count of LOW vulnerabilities.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxLow *int32 `json:"maxLow,omitempty"`
	// MaxUnknown is the maximum count of vulnerabilities of UNKNOWN severity (after unknownSeverityAs).
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxUnknown *int32 `json:"maxUnknown,omitempty"`

	// IgnoreUnfixed leaves out vulnerabilities that have no fixed version.
	// +optional
	IgnoreUnfixed bool `json:"ignoreUnfixed,omitempty"`

	// UnknownSeverityAs is the severity counted for a vulnerability whose source gives none (the Go
	// vulnerability database gives none); default UNKNOWN. Portcullis never invents a severity.
	// +kubebuilder:default=UNKNOWN
	// +optional
	UnknownSeverityAs Severity `json:"unknownSeverityAs,omitempty"`

	// Exceptions are vulnerabilities not counted, each with a reason and optionally an expiry.
	// +kubebuilder:validation:MaxItems=256
	// +listType=map
	// +listMapKey=id
	// +optional
	Exceptions []VulnerabilityException `json:"exceptions,omitempty"`
}

// VulnerabilityException excludes one vulnerability ID from the counts until it expires.
type VulnerabilityException struct {
	// ID of the vulnerability: a CVE, GHSA or GO ID as the scanner reports it, e.g. `CVE-2021-38561`.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +required
	ID string `json:"id"`

	// Expires is when the exception stops applying (RFC 3339); absent means it never expires.
	// +optional
	Expires *metav1.Time `json:"expires,omitempty"`

	// Reason records why the risk is accepted.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +required
	Reason string `json:"reason"`
}

// SecretThreshold is how many exposed secrets an image may contain.
type SecretThreshold struct {
	// Maximum count of exposed secrets; default 0.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=0
	// +optional
	Maximum *int32 `json:"maximum,omitempty"`
}

// MisconfigurationThreshold is the highest misconfiguration severity an image may have.
type MisconfigurationThreshold struct {
	// MaxSeverity is the highest severity allowed; a finding above it fails the policy. Default LOW.
	// +kubebuilder:default=LOW
	// +optional
	MaxSeverity Severity `json:"maxSeverity,omitempty"`
}

// RegistryRole is a project role in the registry (Harbor role IDs in brackets).
// +kubebuilder:validation:Enum=ProjectAdmin;Maintainer;Developer;Guest;LimitedGuest
type RegistryRole string

// The registry roles.
const (
	RoleProjectAdmin RegistryRole = "ProjectAdmin" // Harbor role 1
	RoleDeveloper    RegistryRole = "Developer"    // Harbor role 2
	RoleGuest        RegistryRole = "Guest"        // Harbor role 3
	RoleMaintainer   RegistryRole = "Maintainer"   // Harbor role 4
	RoleLimitedGuest RegistryRole = "LimitedGuest" // Harbor role 5
)

// AccessSpec is the set of members and robot accounts the policy owns in the registry.
type AccessSpec struct {
	// Members are users or groups and their roles.
	// +kubebuilder:validation:MaxItems=128
	// +listType=atomic
	// +optional
	Members []Member `json:"members,omitempty"`

	// Robots are robot accounts whose credentials are written to Secrets in this namespace.
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	// +optional
	Robots []Robot `json:"robots,omitempty"`
}

// Member is a user or a group (LDAP, HTTP or OIDC) with a role: exactly one of user or group.
// +kubebuilder:validation:XValidation:rule="has(self.user) != has(self.group)",message="exactly one of user or group must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.groupType) || has(self.group)",message="groupType applies only to a group"
type Member struct {
	// User name in the registry.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	User string `json:"user,omitempty"`

	// Group name in the registry (for OIDC, the group claim value).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Group string `json:"group,omitempty"`

	// GroupType is how the registry knows the group: `OIDC` (a group claim, the default), `LDAP`
	// (group is the group's DN; Harbor onboards it and lists it by name, which Portcullis looks up
	// through GET /usergroups, a system-level right) or `HTTP` (an HTTP auth proxy group); Harbor
	// group types 3, 1 and 2. Only with group.
	// +optional
	GroupType GroupType `json:"groupType,omitempty"`

	// Role in the matched projects.
	// +required
	Role RegistryRole `json:"role"`
}

// GroupType is the kind of a registry user group (Harbor's group_type).
// +kubebuilder:validation:Enum=OIDC;LDAP;HTTP
type GroupType string

// The group types (Harbor group_type in brackets).
const (
	GroupOIDC GroupType = "OIDC" // 3
	GroupLDAP GroupType = "LDAP" // 1
	GroupHTTP GroupType = "HTTP" // 2
)

// Robot is a robot account with permissions, its credentials kept in a Secret.
type Robot struct {
	// Name of the robot account (the registry adds its own prefix).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
	// +required
	Name string `json:"name"`

	// Permissions as `resource:action` pairs in Harbor's terms, e.g. `repository:pull`,
	// `repository:push`, `artifact:delete`.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:Pattern="^[a-z-]+:[a-z-]+$"
	// +listType=set
	// +required
	Permissions []string `json:"permissions"`

	// SecretName is the Secret, in this namespace, that receives the robot's credentials as a
	// kubernetes.io/dockerconfigjson Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	SecretName string `json:"secretName"`

	// RotateEvery is how often the robot's secret is refreshed (a Go duration, at least 1h); absent
	// means never.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h')",message="rotateEvery must be at least 1h"
	// +optional
	RotateEvery *metav1.Duration `json:"rotateEvery,omitempty"`
}

// RetentionSpec deletes images that no rule keeps. It starts in dry-run, reports its plan in status,
// never deletes a digest that a kept tag, a running Pod or a signature's subject needs, and caps
// deletions per pass.
type RetentionSpec struct {
	// DryRun computes and reports the plan without deleting anything; default true.
	// +kubebuilder:default=true
	// +optional
	DryRun *bool `json:"dryRun,omitempty"`

	// Rules say what to keep; a digest kept by any rule is kept. At most 15 (Harbor's limit).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=15
	// +listType=atomic
	// +required
	Rules []RetentionRule `json:"rules"`

	// ProtectInUse keeps digests that the cluster uses or may run again; default true: those a Pod
	// (in any phase) names or ran, and those the pod template of a Deployment (scaled to zero too),
	// ReplicaSet (kept for rollback), StatefulSet, DaemonSet, Job or CronJob names. Harbor runs its
	// retention itself and cannot see the cluster: on a Harbor Registry it must be set to false.
	// +kubebuilder:default=true
	// +optional
	ProtectInUse *bool `json:"protectInUse,omitempty"`

	// MaxDeletionsPerPass caps how many digests one pass may delete; when absent, 10. Harbor deletes
	// all that a run selects: on a Harbor Registry it must be absent.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxDeletionsPerPass *int32 `json:"maxDeletionsPerPass,omitempty"`
}

// RetentionRule keeps, among the digests whose tags match, the latest N and/or those pushed within D
// days.
// +kubebuilder:validation:XValidation:rule="has(self.keepLatest) || has(self.keepWithinDays)",message="a rule needs keepLatest or keepWithinDays"
type RetentionRule struct {
	// Tags selects the tags the rule applies to; empty selects every tag.
	// +optional
	Tags PatternSelector `json:"tags,omitempty"`

	// KeepLatest keeps the N newest matching digests (by build time: the image config's "created";
	// on Harbor by push time, its template latestPushedK). At least 1: a rule that keeps nothing
	// would only look like protection.
	// +kubebuilder:validation:Minimum=1
	// +optional
	KeepLatest *int32 `json:"keepLatest,omitempty"`

	// KeepWithinDays keeps matching digests built within this many days (image config "created";
	// on Harbor pushed within, its template nDaysSinceLastPush).
	// +kubebuilder:validation:Minimum=0
	// +optional
	KeepWithinDays *int32 `json:"keepWithinDays,omitempty"`

	// Untagged makes the rule apply to untagged digests too (Harbor's "untagged artifacts").
	// +optional
	Untagged bool `json:"untagged,omitempty"`
}

// ImmutabilitySpec makes tags immutable: once pushed they cannot be overwritten or deleted.
type ImmutabilitySpec struct {
	// Tags are doublestar patterns of the tags to make immutable, e.g. `v*`.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=15
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=atomic
	// +required
	Tags []string `json:"tags"`
}

// RegistrySettings are the registry's own security switches for the projects a policy governs
// (Harbor project metadata: https://goharbor.io/docs/main/working-with-projects/project-configuration/).
// An absent field leaves the registry's setting as it is.
type RegistrySettings struct {
	// ScanOnPush has the registry scan every image when it is pushed (Harbor `auto_scan`).
	// +optional
	ScanOnPush *bool `json:"scanOnPush,omitempty"`

	// PreventVulnerablePulls blocks pulls of images with a vulnerability of this severity or above
	// (Harbor `prevent_vul` and `severity`); `NONE` lets every image be pulled again. UNKNOWN is not
	// a threshold Harbor offers.
	// +kubebuilder:validation:Enum=NONE;LOW;MEDIUM;HIGH;CRITICAL
	// +optional
	PreventVulnerablePulls string `json:"preventVulnerablePulls,omitempty"`

	// RequireCosignSignatures blocks pulls of images without a cosign signature (Harbor
	// `enable_content_trust_cosign`).
	// +optional
	RequireCosignSignatures *bool `json:"requireCosignSignatures,omitempty"`

	// CVEAllowlistFromExceptions makes the project's CVE allowlist the IDs of
	// spec.scanning.vulnerabilities.exceptions that have not expired (and stops the project reusing the
	// system allowlist). Harbor's allowlist has one expiry for all its entries: the earliest expiry of
	// the exceptions is used, so no entry outlives its exception; it is recomputed as they expire.
	// +optional
	CVEAllowlistFromExceptions bool `json:"cveAllowlistFromExceptions,omitempty"`
}
