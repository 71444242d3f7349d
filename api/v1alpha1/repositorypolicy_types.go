package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PolicyMode says whether a policy only reports or is also pushed to the registry.
// +kubebuilder:validation:Enum=Audit;Enforce
type PolicyMode string

const (
	// ModeAudit evaluates images and reports verdicts; nothing is written to the registry.
	ModeAudit PolicyMode = "Audit"
	// ModeEnforce also pushes what the policy owns (access, retention, immutability, the registry's
	// security switches) to the registry, and makes the admission webhook (--admission) refuse
	// workloads whose images fail the policy (docs/admission.md).
	ModeEnforce PolicyMode = "Enforce"
)

// RepositoryPolicySpec holds the rules for the repositories of one Registry that match its patterns.
// +kubebuilder:validation:XValidation:rule="!has(self.scanning) || !has(self.scanning.vex) || (has(self.verification) && self.scanning.vex.authorities.all(n, self.verification.authorities.exists(a, a.name == n && !has(a.notation))))",message="scanning.vex.authorities must name cosign authorities (key or keyless) of verification.authorities"
type RepositoryPolicySpec struct {
	// RegistryRef names the Registry, in this namespace, whose repositories the policy governs.
	// +required
	RegistryRef LocalObjectReference `json:"registryRef"`

	// Repositories are doublestar patterns over repository names (e.g. `team-a/**`); a repository is
	// governed when it matches at least one. Use `**` for every repository the Registry watches.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=atomic
	// +required
	Repositories []string `json:"repositories"`

	// Tags selects the tags whose digests are evaluated; empty selects every tag.
	// +optional
	Tags PatternSelector `json:"tags,omitempty"`

	// Mode is `Audit` (report only, the default) or `Enforce` (also write settings to the registry, and,
	// with the manager's --admission, refuse workloads whose images fail: docs/admission.md).
	// +kubebuilder:default=Audit
	// +optional
	Mode PolicyMode `json:"mode,omitempty"`

	// Admission tunes how the admission webhook treats images this policy governs.
	// +optional
	Admission *AdmissionSpec `json:"admission,omitempty"`

	// VerdictAttestation, when set, signs each verdict of this policy as an in-toto attestation
	// with a SLSA verification summary predicate (https://slsa.dev/verification_summary/v1,
	// verificationResult PASSED or FAILED) and pushes it to the registry as a cosign attestation of
	// the image (the `sha256-<hex>.att` tag), replacing the one this policy pushed before, so that
	// Kyverno or Sigstore policy-controller can admit on the verdict (docs/admission.md). A verdict
	// is pushed once, when it changes; the Registry's credentials must allow pushes. A push that
	// fails is reported (an event on the ImageAttestation, a metric) and retried at the next
	// pass; it never changes the verdict. A key that cannot be read stalls the policy.
	// +optional
	VerdictAttestation *VerdictAttestationSpec `json:"verdictAttestation,omitempty"`

	// Verification requires signatures and attestations; when absent none are required.
	// +optional
	Verification *VerificationSpec `json:"verification,omitempty"`

	// Scanning sets the thresholds for vulnerabilities, exposed secrets and misconfigurations; when
	// absent images are scanned and reported but no threshold applies.
	// +optional
	Scanning *ScanningSpec `json:"scanning,omitempty"`

	// Access lists the members and robot accounts the policy owns in the registry (Enforce mode).
	// +optional
	Access *AccessSpec `json:"access,omitempty"`

	// Retention deletes old images by rule, dry-run first.
	// +optional
	Retention *RetentionSpec `json:"retention,omitempty"`

	// Immutability makes matching tags immutable in the registry (Enforce mode).
	// +optional
	Immutability *ImmutabilitySpec `json:"immutability,omitempty"`

	// RegistrySettings are the registry's own security switches for the governed projects (Harbor
	// only; Enforce mode writes them, Audit mode shows the difference).
	// +optional
	RegistrySettings *RegistrySettings `json:"registrySettings,omitempty"`
}

// RepositoryPolicyStatus is the observed state of a RepositoryPolicy.
type RepositoryPolicyStatus struct {
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

	// MatchedRepositories is the number of the Registry's repositories the policy matches.
	// +optional
	MatchedRepositories int32 `json:"matchedRepositories,omitempty"`

	// CompliantImages is the number of selected digests that pass the policy.
	// +optional
	CompliantImages int32 `json:"compliantImages,omitempty"`

	// NonCompliantImages is the number of selected digests that fail the policy.
	// +optional
	NonCompliantImages int32 `json:"nonCompliantImages,omitempty"`

	// PendingImages is the number of selected digests without a verdict for the policy's current
	// generation yet.
	// +optional
	PendingImages int32 `json:"pendingImages,omitempty"`

	// NonCompliant lists the first non-compliant images (by ImageAttestation name) with their reasons;
	// `kubectl get imageattestations` lists them all.
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	// +optional
	NonCompliant []ImageVerdict `json:"nonCompliant,omitempty"`

	// LastEnforcedTime is when the registry last received the policy's settings (Enforce mode).
	// +optional
	LastEnforcedTime *metav1.Time `json:"lastEnforcedTime,omitempty"`

	// Retention is the last retention plan (spec.retention) and what was done with it.
	// +optional
	Retention *RetentionStatus `json:"retention,omitempty"`

	// Enforcement is what the policy owns in the registry (Harbor: members, robot accounts, immutable
	// tag rules, security switches), the difference the last pass found, and what it wrote.
	// +optional
	Enforcement *EnforcementStatus `json:"enforcement,omitempty"`
}

// RetentionStatus is the last retention pass: the plan computed from the registry's tags, digests and
// creation times, and the deletions made from it. A plan is computed once per Registry interval and
// whenever the policy changes.
type RetentionStatus struct {
	// PlanTime is when the plan shown was computed. A pass whose plan is the same as the one shown
	// does not write the status again, so this is when the plan last changed.
	PlanTime metav1.Time `json:"planTime"`

	// ObservedGeneration is the policy generation the plan was computed for.
	ObservedGeneration int64 `json:"observedGeneration"`

	// DryRun is true when nothing was deleted on purpose: spec.retention.dryRun, or mode Audit.
	DryRun bool `json:"dryRun"`

	// Repositories is the number of repositories planned.
	// +optional
	Repositories int32 `json:"repositories,omitempty"`

	// Kept is the number of digests the plan keeps.
	// +optional
	Kept int32 `json:"kept,omitempty"`

	// ToDelete is the number of digests the plan deletes (before this pass's deletions).
	// +optional
	ToDelete int32 `json:"toDelete,omitempty"`

	// Deleted is the number of digests deleted in this pass (at most spec.retention.maxDeletionsPerPass).
	// +optional
	Deleted int32 `json:"deleted,omitempty"`

	// Items lists up to 20 digests: deletions first (planned, or done), then digests kept only because
	// their age cannot be trusted or their subject is not in the registry.
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	// +optional
	Items []RetentionItem `json:"items,omitempty"`

	// Message summarises the pass, or says what stopped it.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Message string `json:"message,omitempty"`
}

// RetentionItem is one digest in a retention plan.
type RetentionItem struct {
	// Repository is the repository name in the registry.
	Repository string `json:"repository"`

	// Digest is the manifest digest.
	Digest string `json:"digest"`

	// Tags are the digest's tags when planned (at most 10 shown).
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	// +optional
	Tags []string `json:"tags,omitempty"`

	// Action is Delete (planned), Deleted (done in this pass) or Keep.
	// +kubebuilder:validation:Enum=Delete;Deleted;Keep
	Action string `json:"action"`

	// Reason is why: NoRuleRetains, SubjectDeleted, TimeUnknown, TimeImplausible, SubjectUnknown, ...
	// (internal/policy's retention reasons).
	Reason string `json:"reason"`
}

// ImageVerdict names a digest and why it fails a policy.
type ImageVerdict struct {
	// ImageAttestation is the name of the digest's ImageAttestation in the policy's namespace.
	// +kubebuilder:validation:MaxLength=253
	ImageAttestation string `json:"imageAttestation"`
	// Repository is the repository name.
	// +kubebuilder:validation:MaxLength=256
	Repository string `json:"repository"`
	// Digest is the manifest digest.
	// +kubebuilder:validation:MaxLength=160
	Digest string `json:"digest"`
	// Tag is one tag pointing at the digest (the first in order).
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Tag string `json:"tag,omitempty"`
	// Reasons are the CamelCase reasons it fails (as in ImageAttestation status.policies).
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=128
	// +listType=atomic
	// +optional
	Reasons []string `json:"reasons,omitempty"`
}

// RepositoryPolicy holds signature, scanning, access, retention and immutability rules for the
// repositories of one Registry that match its patterns.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=portcullis,shortName=rp
// +kubebuilder:printcolumn:name="Registry",type=string,JSONPath=`.spec.registryRef.name`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Matched",type=integer,JSONPath=`.status.matchedRepositories`
// +kubebuilder:printcolumn:name="Compliant",type=integer,JSONPath=`.status.compliantImages`
// +kubebuilder:printcolumn:name="NonCompliant",type=integer,JSONPath=`.status.nonCompliantImages`
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.pendingImages`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RepositoryPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired state.
	// +required
	Spec RepositoryPolicySpec `json:"spec"`

	// Status is the observed state.
	// +kubebuilder:default={}
	// +optional
	Status RepositoryPolicyStatus `json:"status,omitempty"`
}

// RepositoryPolicyList is a list of RepositoryPolicy.
// +kubebuilder:object:root=true
type RepositoryPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RepositoryPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RepositoryPolicy{}, &RepositoryPolicyList{})
}

// AdmissionSpec tunes the admission webhook for a policy's images (docs/admission.md).
type AdmissionSpec struct {
	// WaitForVerdict lets the webhook evaluate an image it has no verdict for yet (a tag pushed
	// since the last listing, a digest not in the inventory, a verdict of an older policy
	// generation) and wait up to this long for the verdict before deciding. The image's
	// ImageAttestation is created (after one manifest request to the registry confirms the digest)
	// and verified and scanned at once; if the verdict is not there in time the image is refused as
	// NotEvaluated, as without this field. It must stay under the webhook's timeoutSeconds (5 s in
	// config/webhook: raise both together; at most 25 s). Absent: no waiting.
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('25s')",message="waitForVerdict must be between 0s and 25s"
	// +optional
	WaitForVerdict *metav1.Duration `json:"waitForVerdict,omitempty"`
}

// VerdictAttestationSpec says how verdicts are signed (see RepositoryPolicySpec.VerdictAttestation).
type VerdictAttestationSpec struct {
	// KeySecretRef is the Secret key, in the policy's namespace, holding the signing key: a PEM
	// private key (ECDSA, Ed25519 or RSA; PKCS#8, PKCS#1 or SEC 1), or a key written by `cosign
	// generate-key-pair`, whose password is then under PasswordKey of the same Secret. Its public
	// key verifies the attestations.
	// +required
	KeySecretRef SecretKeyReference `json:"keySecretRef"`
	// PasswordKey is the key of the same Secret holding a cosign key's password (default
	// `cosign.password`; absent from the Secret: no password).
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PasswordKey string `json:"passwordKey,omitempty"`
	// VerifierID is the predicate's verifier.id, a URI naming this verifier (default
	// `https://portcullis.dev/verifier`).
	// +kubebuilder:validation:MaxLength=256
	// +optional
	VerifierID string `json:"verifierID,omitempty"`
}
