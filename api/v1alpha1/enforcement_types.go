package v1alpha1

// EnforcementStatus is the last pass that compared what a policy owns in a Harbor registry with
// what is there. Robot secrets never appear here: they go only to the Secrets named by
// spec.access.robots[].secretName.
type EnforcementStatus struct {
	// ObservedGeneration is the policy generation the pass compared against.
	ObservedGeneration int64 `json:"observedGeneration"`

	// Registry is the Harbor (host[:port] of the Registry's spec.url, default ports left out) the
	// record below is about; a policy moved to another Harbor starts a new record there.
	// +optional
	Registry string `json:"registry,omitempty"`

	// Projects are the Harbor projects the policy claims (from spec.repositories), and, until a pass
	// succeeds, those it claimed before (what it created there is still to be removed).
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Projects []string `json:"projects,omitempty"`

	// DryRun is true when the changes were only computed (mode Audit): nothing was written.
	DryRun bool `json:"dryRun"`

	// InSync is true when the last pass found nothing to change (or made every change it found).
	InSync bool `json:"inSync"`

	// Changes are the differences the last pass found: to make (DryRun, or not made because of an
	// error) or made. A pass that finds none keeps showing the changes the pass before it made. At
	// most 50 are listed; PendingChanges counts those not made.
	// +kubebuilder:validation:MaxItems=50
	// +listType=atomic
	// +optional
	Changes []EnforcementChange `json:"changes,omitempty"`

	// PendingChanges is the number of differences not made yet.
	// +optional
	PendingChanges int32 `json:"pendingChanges,omitempty"`

	// OwnedMembers are the project memberships Portcullis added for this policy; only these are ever
	// removed (when they leave spec.access.members). Memberships made by hand are never removed.
	// +kubebuilder:validation:MaxItems=512
	// +listType=atomic
	// +optional
	OwnedMembers []OwnedMember `json:"ownedMembers,omitempty"`

	// OwnedImmutableRules are the immutable tag rules Portcullis created for this policy; only these
	// are ever deleted.
	// +kubebuilder:validation:MaxItems=512
	// +listType=atomic
	// +optional
	OwnedImmutableRules []OwnedImmutableRule `json:"ownedImmutableRules,omitempty"`

	// OwnedRetentionPolicies are the project retention policies Portcullis created (or adopted
	// empty) for this policy; only these are ever changed.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	OwnedRetentionPolicies []OwnedRetentionPolicy `json:"ownedRetentionPolicies,omitempty"`

	// RetentionRuns is the latest run of each retention policy in OwnedRetentionPolicies, as Harbor
	// reports it: with spec.retention.dryRun, the dry run Portcullis asked for after the last change.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	RetentionRuns []HarborRetentionRun `json:"retentionRuns,omitempty"`

	// Message says what the pass did, or what stopped it (an error from Harbor, a robot of the same
	// name that Portcullis did not create, ...).
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Message string `json:"message,omitempty"`

	// Failed is true when the last pass stopped on an error; it is retried with backoff.
	// +optional
	Failed bool `json:"failed,omitempty"`
}

// EnforcementChange is one difference between the policy and the registry.
type EnforcementChange struct {
	// Project is the Harbor project.
	Project string `json:"project"`
	// Kind is what changes: Member, Robot, RobotSecret, ImmutableRule, Setting, CVEAllowlist,
	// RetentionPolicy or RetentionRun (a dry run Harbor is asked to make).
	Kind string `json:"kind"`
	// Name names it: a user (`user:alice`) or group (`group:devs`), a robot, a tag and repository
	// pattern (`v* in **`), a setting (`auto_scan`).
	// +kubebuilder:validation:MaxLength=512
	Name string `json:"name"`
	// Action is Create, Update, Delete, Rotate (a robot secret) or Run (a retention dry run).
	// +kubebuilder:validation:Enum=Create;Update;Delete;Rotate;Run
	Action string `json:"action"`
	// Detail is the difference, e.g. `role Guest -> Developer` or `"false" -> "true"`; never a secret.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Detail string `json:"detail,omitempty"`
	// Done is true when the change was made.
	// +optional
	Done bool `json:"done,omitempty"`
}

// OwnedMember is a project membership Portcullis added.
type OwnedMember struct {
	Project string `json:"project"`
	// Kind is `u` (user) or `g` (group), as Harbor's entity_type.
	// +kubebuilder:validation:Enum=u;g
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// OwnedImmutableRule is an immutable tag rule Portcullis created.
type OwnedImmutableRule struct {
	Project string `json:"project"`
	// ID is Harbor's rule ID.
	ID int64 `json:"id"`
	// Tags and Repositories are the rule's doublestar patterns.
	Tags         string `json:"tags"`
	Repositories string `json:"repositories"`
	// TagDecoration is the tag selector's decoration in Harbor: "matches" (absent: the tags
	// matching Tags are immutable) or "excludes" (the tags not matching it are: how spec.immutability
	// tags "**" is written, excluding the supply-chain tags "sha256-*").
	// +kubebuilder:validation:Enum=matches;excludes
	// +optional
	TagDecoration string `json:"tagDecoration,omitempty"`
}

// HarborRetentionRun is the latest execution of a project retention policy.
type HarborRetentionRun struct {
	Project string `json:"project"`
	// PolicyID is the retention policy, RunID Harbor's execution ID.
	PolicyID int64 `json:"policyID"`
	RunID    int64 `json:"runID"`
	// DryRun is true for a run that deleted nothing.
	DryRun bool `json:"dryRun"`
	// Status is Harbor's: Pending, Running, Succeed, Error, Stopped.
	Status string `json:"status"`
	// Artifacts is how many artifacts the run looked at, Retained how many it kept; the rest were
	// deleted (or, in a dry run, would have been).
	Artifacts int64 `json:"artifacts"`
	Retained  int64 `json:"retained"`
}

// OwnedRetentionPolicy is a project retention policy Portcullis manages.
type OwnedRetentionPolicy struct {
	Project string `json:"project"`
	// ID is Harbor's retention policy ID (the project metadata retention_id).
	ID int64 `json:"id"`
}

// Robot secret Secrets carry these (kubernetes.io/dockerconfigjson Secrets written for
// spec.access.robots).
const (
	// RobotLabel on a Secret names the robot (spec.access.robots[].name) whose credentials it holds.
	RobotLabel = "registry.portcullis.dev/robot"
	// RobotIDAnnotation is the Harbor robot ID the Secret's credentials belong to.
	RobotIDAnnotation = "registry.portcullis.dev/robot-id"
	// RotatedAtAnnotation is when the secret was last issued (RFC 3339).
	RotatedAtAnnotation = "registry.portcullis.dev/rotated-at"
)
