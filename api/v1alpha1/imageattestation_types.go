package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Label keys on ImageAttestations, for selection with `kubectl get ia -l ...`.
const (
	// RegistryLabel carries the Registry's name.
	RegistryLabel = "registry.portcullis.dev/registry"
	// RepositoryHashLabel carries a short hash of the repository name (names may exceed label limits).
	RepositoryHashLabel = "registry.portcullis.dev/repository-hash"
)

// RegistryLabelValue is the RegistryLabel value for the Registry name: the name when it fits a
// label value (63 characters), else "h-" and 32 hex digits of its sha256.
func RegistryLabelValue(name string) string {
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "h-" + hex.EncodeToString(sum[:])[:32]
}

// MaxTopFindings is the most findings of one kind an ImageAttestation lists; counts cover the rest.
const MaxTopFindings = 20

// ImageAttestationSpec identifies one image digest in one repository. It is written by the Registry
// controller; users do not edit it.
// +kubebuilder:validation:XValidation:rule="self.registryRef == oldSelf.registryRef && self.repository == oldSelf.repository",message="registryRef and repository are immutable"
type ImageAttestationSpec struct {
	// RegistryRef names the Registry, in this namespace, the image was found in.
	// +required
	RegistryRef LocalObjectReference `json:"registryRef"`

	// Repository is the repository name within the registry, e.g. `team-a/api`.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +required
	Repository string `json:"repository"`

	// Digest of the manifest or index, `<algorithm>:<hex>` (OCI image spec, descriptor digests).
	// +kubebuilder:validation:Pattern="^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="digest is immutable"
	// +required
	Digest string `json:"digest"`

	// Tags that pointed at the digest at the last listing, sorted.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=128
	// +listType=set
	// +optional
	Tags []string `json:"tags,omitempty"`

	// MediaType of the manifest: an OCI or Docker image manifest, or an OCI image index or Docker
	// manifest list.
	// +kubebuilder:validation:MaxLength=255
	// +optional
	MediaType string `json:"mediaType,omitempty"`

	// Platforms lists, for an index, the platform manifests it contains, in index order.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Platforms []PlatformManifest `json:"platforms,omitempty"`

	// MovedTags records tags that moved to this digest from another one while Portcullis watched the
	// registry (newest last, at most 10). Policies with spec.immutability report the moves of tags
	// they make immutable (condition TagImmutable); plain OCI registries cannot refuse them.
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	// +optional
	MovedTags []MovedTag `json:"movedTags,omitempty"`

	// Accessories are the supply-chain tags of the digest and of its platform manifests that the last
	// listing found in the repository: cosign's `sha256-<hex>.sig`, `.att` and `.sbom` tags and the
	// OCI 1.1 referrers fallback tag `sha256-<hex>` (distribution-spec, "Referrers Tag Schema"),
	// each with the digest it pointed at. A change (a new or re-signed signature) verifies the image
	// again; a tag the listing did not find is not requested when verifying. Absent on objects not
	// listed since the field was added: everything is requested then.
	// +optional
	Accessories *Accessories `json:"accessories,omitempty"`
}

// Accessories are supply-chain tags found by a listing; empty tags mean the listing found none.
type Accessories struct {
	// Tags, sorted by tag.
	// +kubebuilder:validation:MaxItems=272
	// +listType=map
	// +listMapKey=tag
	// +optional
	Tags []Accessory `json:"tags,omitempty"`
}

// Accessory is one supply-chain tag and the manifest it points at.
type Accessory struct {
	// Tag, e.g. `sha256-<hex>.sig`.
	// +kubebuilder:validation:MaxLength=140
	// +required
	Tag string `json:"tag"`

	// Digest of the manifest the tag pointed at (the signature, attestation or referrers index).
	// +kubebuilder:validation:MaxLength=140
	// +required
	Digest string `json:"digest"`
}

// MovedTag is a tag that pointed at another digest in an earlier listing.
type MovedTag struct {
	// Tag is the tag name.
	Tag string `json:"tag"`

	// From is the digest the tag pointed at before.
	From string `json:"from"`

	// Time is when the move was seen (the listing that found it).
	Time metav1.Time `json:"time"`
}

// PlatformManifest is one child manifest of an image index.
type PlatformManifest struct {
	// Digest of the platform manifest.
	// +kubebuilder:validation:Pattern="^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$"
	// +required
	Digest string `json:"digest"`

	// Platform as os/architecture[/variant], e.g. linux/arm64/v8; empty when the index does not say.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Platform string `json:"platform,omitempty"`
}

// SignatureResult is the outcome of one authority of one policy for the digest.
type SignatureResult struct {
	// Policy is the RepositoryPolicy's name.
	// +required
	Policy string `json:"policy"`
	// Authority is the authority's name within the policy.
	// +required
	Authority string `json:"authority"`
	// Verified is true when a signature by this authority verified.
	Verified bool `json:"verified"`
	// Signer is the key name or the keyless certificate identity that signed.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Signer string `json:"signer,omitempty"`
	// Issuer is the keyless certificate's OIDC issuer.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// Reason is a CamelCase reason when not verified (e.g. `SignatureMissing`, `KeyMismatch`).
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message explains the reason.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Message string `json:"message,omitempty"`
}

// VulnerabilitySummary counts vulnerabilities by severity and lists the top ones.
type VulnerabilitySummary struct {
	// Critical is the count of CRITICAL vulnerabilities.
	Critical int32 `json:"critical"`
	// High is the count of HIGH vulnerabilities.
	High int32 `json:"high"`
	// Medium is the count of MEDIUM vulnerabilities.
	Medium int32 `json:"medium"`
	// Low is the count of LOW vulnerabilities.
	Low int32 `json:"low"`
	// Unknown is the count of vulnerabilities whose source gives no severity.
	Unknown int32 `json:"unknown"`
	// Fixable is how many of them have a fixed version.
	Fixable int32 `json:"fixable"`
	// Top lists at most 20 findings, most severe first.
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	// +optional
	Top []VulnerabilityFinding `json:"top,omitempty"`
}

// VulnerabilityFinding is one vulnerability in one package.
type VulnerabilityFinding struct {
	// ID is the vulnerability ID (CVE, GHSA or GO ID).
	// +kubebuilder:validation:MaxLength=256
	ID string `json:"id"`
	// Package is the affected package (a Go module path, a Debian package name, ...).
	// +kubebuilder:validation:MaxLength=256
	Package string `json:"package"`
	// InstalledVersion is the version found in the image.
	// +kubebuilder:validation:MaxLength=256
	InstalledVersion string `json:"installedVersion"`
	// FixedVersion is the first version that fixes it, if any.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	FixedVersion string `json:"fixedVersion,omitempty"`
	// Severity as reported (UNKNOWN when the source gives none).
	Severity Severity `json:"severity"`
	// Title is a one-line summary.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Title string `json:"title,omitempty"`
}

// SecretSummary counts exposed secrets and lists the top ones (never the secret itself).
type SecretSummary struct {
	// Count of exposed secrets.
	Count int32 `json:"count"`
	// Top lists at most 20 findings.
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	// +optional
	Top []SecretFinding `json:"top,omitempty"`
}

// SecretFinding is one exposed secret: which rule matched where; the matched text is never stored.
type SecretFinding struct {
	// RuleID is the scanner's rule, e.g. `aws-access-key-id`.
	// +kubebuilder:validation:MaxLength=256
	RuleID string `json:"ruleID"`
	// Severity of the rule.
	Severity Severity `json:"severity"`
	// Path of the file in the image.
	// +kubebuilder:validation:MaxLength=1024
	Path string `json:"path"`
	// Line number in the file (1-based).
	// +optional
	Line int32 `json:"line,omitempty"`
}

// MisconfigurationSummary counts image-config misconfigurations and lists the top ones.
type MisconfigurationSummary struct {
	// Count of failed checks.
	Count int32 `json:"count"`
	// Top lists at most 20 findings, most severe first.
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	// +optional
	Top []MisconfigurationFinding `json:"top,omitempty"`
}

// MisconfigurationFinding is one failed check.
type MisconfigurationFinding struct {
	// ID of the check, e.g. `DS-0002`.
	// +kubebuilder:validation:MaxLength=256
	ID string `json:"id"`
	// Severity of the check.
	Severity Severity `json:"severity"`
	// Title is a one-line summary.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Title string `json:"title,omitempty"`
}

// ScannerInfo names the scanner and the vulnerability DB a scan used.
type ScannerInfo struct {
	// Name of the scanner, e.g. `trivy`.
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`
	// Version of the scanner.
	// +kubebuilder:validation:MaxLength=256
	Version string `json:"version"`
	// DBUpdatedAt is when the vulnerability DB was built.
	// +optional
	DBUpdatedAt *metav1.Time `json:"dbUpdatedAt,omitempty"`
	// OS is the operating system the scan detected, family and version (e.g. `alpine 3.20.3`), or
	// `none` when it detected none: the image's OS packages were not assessed (a distroless or
	// scratch image, or a distribution the scanner does not know), so a clean scan says nothing
	// about them (`scanning.requireOS` fails such an image). Empty for a scan made before Portcullis
	// recorded it.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	OS string `json:"os,omitempty"`
}

// PlatformScan is the scan of one platform image of an index.
type PlatformScan struct {
	// Platform is os/architecture[/variant] from the index, e.g. `linux/arm64/v8`.
	// +kubebuilder:validation:MaxLength=128
	Platform string `json:"platform"`
	// Digest is the platform manifest's digest.
	// +kubebuilder:validation:MaxLength=256
	Digest string `json:"digest"`
	// OS is the operating system the scan of this platform detected, or `none`.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	OS string `json:"os,omitempty"`
	// Critical, High, Medium, Low and Unknown count this platform's vulnerabilities by severity.
	Critical int32 `json:"critical"`
	High     int32 `json:"high"`
	Medium   int32 `json:"medium"`
	Low      int32 `json:"low"`
	Unknown  int32 `json:"unknown"`
	// Secrets and Misconfigurations count this platform's other findings.
	Secrets           int32 `json:"secrets"`
	Misconfigurations int32 `json:"misconfigurations"`
}

// PolicyResult is the verdict of one policy for the digest.
type PolicyResult struct {
	// Name of the RepositoryPolicy.
	Name string `json:"name"`
	// ObservedGeneration is the policy generation the verdict was computed for.
	ObservedGeneration int64 `json:"observedGeneration"`
	// Compliant is true when the image passes the policy.
	Compliant bool `json:"compliant"`
	// Reasons lists every CamelCase reason it fails (e.g. `SignatureMissing`,
	// `VulnerabilityThresholdExceeded`); empty when compliant.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=128
	// +listType=atomic
	// +optional
	Reasons []string `json:"reasons,omitempty"`
	// VEX says what the policy's signed OpenVEX documents (spec.scanning.vex) did to the findings;
	// absent when the policy applies none.
	// +optional
	VEX *VEXResult `json:"vex,omitempty"`
	// Attested fingerprints the verdict last pushed to the registry as a verdict attestation
	// (spec.verdictAttestation of the policy); empty when none was pushed. An unchanged verdict is
	// not pushed again.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Attested string `json:"attested,omitempty"`
}

// VEXResult is what signed OpenVEX statements did to one image's findings under one policy.
type VEXResult struct {
	// SuppressedCount is how many vulnerability findings a statement removed from the thresholds.
	SuppressedCount int32 `json:"suppressedCount"`
	// Suppressed lists the first of them (at most 16).
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	Suppressed []SuppressedFinding `json:"suppressed,omitempty"`
	// Ignored lists VEX documents that were not applied, each with why (not signed by a VEX
	// authority, not OpenVEX); at most 8.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=atomic
	// +optional
	Ignored []string `json:"ignored,omitempty"`
}

// SuppressedFinding is a vulnerability finding a VEX statement removed.
type SuppressedFinding struct {
	// ID of the vulnerability (CVE or advisory ID) and Package it was found in.
	ID      string `json:"id"`
	Package string `json:"package,omitempty"`
	// Status is the statement's: `not_affected` or `fixed`; Justification its OpenVEX justification.
	Status        string `json:"status"`
	Justification string `json:"justification,omitempty"`
	// Source is the digest of the attestation that carried the statement (a sigstore bundle
	// referrer's manifest, or a legacy `.att` layer), signed by Authority.
	Source    string `json:"source"`
	Authority string `json:"authority"`
}

// ImageAttestationStatus is the verdict for the digest. Its size does not grow with the number of
// findings: counts plus at most 20 top findings of each kind.
type ImageAttestationStatus struct {
	// Conditions: Ready (a current verdict exists), Reconciling, Stalled, SignatureVerified,
	// VulnerabilitiesScanned, PolicyCompliant.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ObservedGeneration is the generation whose outcome (Ready or Stalled) the conditions report;
	// -1 before the first final outcome.
	// +kubebuilder:default=-1
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Signatures has one result per authority of each selecting policy.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Signatures []SignatureResult `json:"signatures,omitempty"`

	// Vulnerabilities found by the last scan.
	// +optional
	Vulnerabilities *VulnerabilitySummary `json:"vulnerabilities,omitempty"`

	// Secrets found by the last scan.
	// +optional
	Secrets *SecretSummary `json:"secrets,omitempty"`

	// Misconfigurations found by the last scan.
	// +optional
	Misconfigurations *MisconfigurationSummary `json:"misconfigurations,omitempty"`

	// Scanner that made the last scan.
	// +optional
	Scanner *ScannerInfo `json:"scanner,omitempty"`

	// Platforms has one scan per platform image when the digest is an index (OCI image index or
	// Docker manifest list); empty for a single image. Attestation manifests (platform
	// unknown/unknown) are not platforms. The summaries above merge the platforms' findings (a
	// finding on several platforms counts once), so every count is at least the worst platform's,
	// and scanner.os is `none` when any platform has no OS.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	Platforms []PlatformScan `json:"platforms,omitempty"`

	// LastScanTime is when the digest was last scanned.
	// +optional
	LastScanTime *metav1.Time `json:"lastScanTime,omitempty"`

	// LastVerifiedTime is when signatures were last verified.
	// +optional
	LastVerifiedTime *metav1.Time `json:"lastVerifiedTime,omitempty"`

	// Policies has the verdict of each selecting policy.
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	// +optional
	Policies []PolicyResult `json:"policies,omitempty"`

	// History holds the last 10 changes of the verdict, oldest first: when the image became
	// compliant or non-compliant, or failed for other reasons, and what changed to make it so. A
	// change of a policy's generation that leaves the verdict as it was adds nothing.
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	// +optional
	History []VerdictTransition `json:"history,omitempty"`
}

// Verdicts of a VerdictTransition.
const (
	// VerdictCompliant: every selecting policy passes.
	VerdictCompliant = "Compliant"
	// VerdictNonCompliant: at least one selecting policy fails.
	VerdictNonCompliant = "NonCompliant"
	// VerdictNoPolicy: no policy selects the image.
	VerdictNoPolicy = "NoPolicy"
)

// Triggers of a VerdictTransition: what differed from the pass before.
const (
	// TriggerFirstVerdict: the image's first verdict.
	TriggerFirstVerdict = "FirstVerdict"
	// TriggerPolicyChange: a selecting policy was added, removed or changed (its generation).
	TriggerPolicyChange = "PolicyChange"
	// TriggerSignatureChange: the signature and attestation results changed (signed, re-signed,
	// a signature removed, a key rotated).
	TriggerSignatureChange = "SignatureChange"
	// TriggerDBUpdate: a rescan with a newer vulnerability DB changed the findings.
	TriggerDBUpdate = "DBUpdate"
	// TriggerScan: a scan (the first, or one after the findings were lost) changed the findings.
	TriggerScan = "Scan"
	// TriggerTime: nothing the image depends on changed; time did (an exception expired).
	TriggerTime = "Time"
)

// VerdictTransition is one change of an image's verdict (status.history).
type VerdictTransition struct {
	// Time is when the new verdict was computed.
	Time metav1.Time `json:"time"`
	// Verdict after the change: Compliant, NonCompliant or NoPolicy.
	// +kubebuilder:validation:Enum=Compliant;NonCompliant;NoPolicy
	Verdict string `json:"verdict"`
	// Reasons are the failing policies' reasons after the change, as `<policy>: <Reason>` (at most
	// 8); empty when compliant.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=400
	// +listType=atomic
	// +optional
	Reasons []string `json:"reasons,omitempty"`
	// Trigger is what changed since the verdict before: FirstVerdict, PolicyChange,
	// SignatureChange, DBUpdate, Scan or Time (the first that applies, in that order).
	// +kubebuilder:validation:Enum=FirstVerdict;PolicyChange;SignatureChange;DBUpdate;Scan;Time
	Trigger string `json:"trigger"`
}

// ImageAttestation is the verdict for one image digest in one repository: signatures, scan summary
// and which policies pass. The Registry controller keeps exactly one per (repository, digest) that some
// RepositoryPolicy selects.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=portcullis,shortName=ia
// +kubebuilder:printcolumn:name="Repository",type=string,JSONPath=`.spec.repository`
// +kubebuilder:printcolumn:name="Tags",type=string,JSONPath=`.spec.tags`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.spec.digest`
// +kubebuilder:printcolumn:name="Signed",type=string,JSONPath=`.status.conditions[?(@.type=="SignatureVerified")].status`
// +kubebuilder:printcolumn:name="Critical",type=integer,JSONPath=`.status.vulnerabilities.critical`
// +kubebuilder:printcolumn:name="High",type=integer,JSONPath=`.status.vulnerabilities.high`
// +kubebuilder:printcolumn:name="Compliant",type=string,JSONPath=`.status.conditions[?(@.type=="PolicyCompliant")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Why",type=string,JSONPath=`.status.conditions[?(@.type=="PolicyCompliant")].message`,description="Each policy's verdict as the policy counts (e.g. unknownSeverityAs: HIGH counts the scanner's UNKNOWN findings as HIGH): \"production: VulnerabilityThresholdExceeded (vulnerabilities HIGH 2 > 0)\""
type ImageAttestation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec identifies the digest.
	// +required
	Spec ImageAttestationSpec `json:"spec"`

	// Status is the verdict.
	// +kubebuilder:default={}
	// +optional
	Status ImageAttestationStatus `json:"status,omitempty"`
}

// ImageAttestationList is a list of ImageAttestation.
// +kubebuilder:object:root=true
type ImageAttestationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageAttestation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ImageAttestation{}, &ImageAttestationList{})
}
