package v1alpha1

// LocalObjectReference names an object in the same namespace as the referring object. Portcullis never
// follows a reference into another namespace.
type LocalObjectReference struct {
	// Name of the referenced object, in the referring object's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`
}

// SecretKeyReference names one key of a Secret in the same namespace as the referring object.
type SecretKeyReference struct {
	// Name of the Secret, in the referring object's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`

	// Key in the Secret's data that holds the value.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Key string `json:"key"`
}

// PatternSelector selects names by doublestar glob patterns
// (https://github.com/bmatcuk/doublestar#patterns: `*` stays within one path segment, `**` crosses
// segments, `{a,b}` and `[a-z]` as usual). A name is selected when it matches at least one include
// pattern (or include is empty) and no exclude pattern.
type PatternSelector struct {
	// Include patterns; empty selects every name.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=atomic
	// +optional
	Include []string `json:"include,omitempty"`

	// Exclude patterns; a name matching any of them is not selected, whatever include says.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=atomic
	// +optional
	Exclude []string `json:"exclude,omitempty"`
}

// Severity is a finding severity as trivy reports it (upper case).
// +kubebuilder:validation:Enum=UNKNOWN;LOW;MEDIUM;HIGH;CRITICAL
type Severity string

// The severities, lowest first.
const (
	SeverityUnknown  Severity = "UNKNOWN"
	SeverityLow      Severity = "LOW"
	SeverityMedium   Severity = "MEDIUM"
	SeverityHigh     Severity = "HIGH"
	SeverityCritical Severity = "CRITICAL"
)
