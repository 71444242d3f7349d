package v1alpha1

// Condition types. Ready, Reconciling and Stalled follow the kstatus convention
// (sigs.k8s.io/cli-utils/pkg/kstatus), so Flux reads the health of every kind as it is, and Argo CD with
// the check in config/argocd; the others are domain conditions of ImageAttestation.
const (
	// ReadyCondition summarises the object: True when the last reconciliation reached its goal.
	ReadyCondition = "Ready"
	// ReconcilingCondition is True while the controller works towards the goal (abnormal-true).
	ReconcilingCondition = "Reconciling"
	// StalledCondition is True when the controller cannot make progress until the spec or a referenced
	// object changes; it does not retry by itself (abnormal-true).
	StalledCondition = "Stalled"

	// SignatureVerifiedCondition is True when the signatures and attestations that the selecting
	// policies require verified for the digest.
	SignatureVerifiedCondition = "SignatureVerified"
	// VulnerabilitiesScannedCondition is True when a current scan of the digest exists.
	VulnerabilitiesScannedCondition = "VulnerabilitiesScanned"
	// PolicyCompliantCondition is True when every selecting policy passes for the digest.
	PolicyCompliantCondition = "PolicyCompliant"
	// TagImmutableCondition (ImageAttestation): False when a tag a selecting policy makes immutable
	// (spec.immutability) moved to this digest from another; present only when such a policy exists.
	TagImmutableCondition = "TagImmutable"
	// ImmutableTagMovedReason: an immutable tag now points here and pointed elsewhere before.
	ImmutableTagMovedReason = "ImmutableTagMoved"
	// NoImmutableTagMovedReason: no tag the selecting policies make immutable moved here (or the moves
	// were acknowledged).
	NoImmutableTagMovedReason = "NoImmutableTagMoved"
	// MovesAcknowledgedAnnotation on an ImageAttestation acknowledges the tag moves recorded up to the
	// time it holds (RFC 3339), e.g. after a deliberate re-push: TagImmutable no longer reports them.
	MovesAcknowledgedAnnotation = "registry.portcullis.dev/moves-acknowledged-at"
)

// Condition reasons: CamelCase, stable, meant for alerting rules and `kubectl wait`.
const (
	// SucceededReason: the last reconciliation reached its goal.
	SucceededReason = "Succeeded"
	// ProgressingReason: the controller has started work on a new generation.
	ProgressingReason = "Progressing"
	// SuspendedReason: spec.suspend is true; nothing is done until it is cleared.
	SuspendedReason = "Suspended"

	// SecretNotFoundReason: a referenced Secret does not exist in the object's namespace.
	SecretNotFoundReason = "SecretNotFound"
	// SecretInvalidReason: a referenced Secret has the wrong type or lacks a required key.
	SecretInvalidReason = "SecretInvalid"
	// ConfigMapNotFoundReason: a referenced ConfigMap does not exist in the object's namespace.
	ConfigMapNotFoundReason = "ConfigMapNotFound"
	// RegistryNotFoundReason: the referenced Registry does not exist in the object's namespace.
	RegistryNotFoundReason = "RegistryNotFound"
	// InsecureNotAllowedReason: plain http to a non-loopback host, which the manager does not allow.
	InsecureNotAllowedReason = "InsecureNotAllowed"
	// HostNotAllowedReason: the registry host is not in the manager's list of allowed hosts, or the
	// manager's egress policy refused an address a request would connect to.
	HostNotAllowedReason = "HostNotAllowed"
	// ListingShrankReason: a repository's tag list, or the catalog, came back with under half of
	// what the last listing saw. The ImageAttestations are kept and nothing acts on the smaller view
	// until the next listing confirms it (a truncated response must never read as "deleted").
	ListingShrankReason = "ListingShrank"
	// ReadFailedReason: reading a referenced object from the API server failed; transient, retried
	// with backoff.
	ReadFailedReason = "ReadFailed"
	// InvalidSpecReason: the spec passed admission but cannot work (for example a URL that does not
	// parse); the message says which field.
	InvalidSpecReason = "InvalidSpec"

	// AuthenticationFailedReason: the registry refused the credentials; the last known inventory is
	// kept.
	AuthenticationFailedReason = "AuthenticationFailed"
	// RateLimitedReason: the registry kept rate-limiting after Retry-After and backoff; the last known
	// inventory is kept.
	RateLimitedReason = "RateLimited"
	// RegistryUnavailableReason: the registry could not be reached, answered 5xx or timed out; the
	// last known inventory is kept.
	RegistryUnavailableReason = "RegistryUnavailable"
	// InvalidResponseReason: the registry answered something that breaks the distribution spec (bad
	// JSON, endless paging, an oversize body); the last known inventory is kept.
	InvalidResponseReason = "InvalidResponse"
	// InventoryWriteFailedReason: creating, updating or deleting ImageAttestations failed; retried.
	InventoryWriteFailedReason = "InventoryWriteFailed"

	// PolicyInvalidReason: a RepositoryPolicy of the Registry has a spec that cannot work (an invalid
	// pattern); the Registry keeps its inventory unchanged until the policy is fixed.
	PolicyInvalidReason = "PolicyInvalid"

	// ProjectConflictReason: another Enforce policy of the Registry, created earlier, already claims a
	// Harbor project this policy names; the older policy keeps it and this one writes nothing.
	ProjectConflictReason = "ProjectConflict"
	// NotExpressibleReason: the policy asks the registry for something its API cannot express (a
	// project-wide setting on part of a project, a tag pattern that would also freeze cosign
	// signature tags, ...); it is rejected rather than weakened.
	NotExpressibleReason = "NotExpressible"
	// EnforcementFailedReason: writing the policy to the registry failed (see
	// status.enforcement.message); retried with backoff.
	EnforcementFailedReason = "EnforcementFailed"

	// PendingReason: the object's goal is not reached yet and work goes on (for an ImageAttestation:
	// no current verdict yet); Ready is Unknown meanwhile.
	PendingReason = "Pending"
	// NotVerifiedReason: signatures have not been verified for this digest yet.
	NotVerifiedReason = "NotVerified"
	// NotScannedReason: the digest has not been scanned yet.
	NotScannedReason = "NotScanned"
	// NotEvaluatedReason: no policy has been evaluated for this digest yet.
	NotEvaluatedReason = "NotEvaluated"
)
