package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// IndexPolicy decides what must be signed for a multi-platform image (an OCI image index or a Docker
// manifest list) to count as signed.
// +kubebuilder:validation:Enum=Index;Platforms;Either
type IndexPolicy string

const (
	// IndexPolicyIndex requires a signature on the index digest itself.
	IndexPolicyIndex IndexPolicy = "Index"
	// IndexPolicyPlatforms requires a signature on every platform manifest the index lists.
	IndexPolicyPlatforms IndexPolicy = "Platforms"
	// IndexPolicyEither accepts either of the above.
	IndexPolicyEither IndexPolicy = "Either"
)

// VerificationSpec requires cosign signatures and in-toto attestations
// (https://docs.sigstore.dev/cosign/verifying/verify/).
// +kubebuilder:validation:XValidation:rule="!has(self.require) || self.require <= size(self.authorities)",message="require must not exceed the number of authorities"
// +kubebuilder:validation:XValidation:rule="!has(self.attestations) || self.attestations.all(a, self.authorities.exists(x, x.name == a.authority))",message="every attestation must name one of the authorities"
type VerificationSpec struct {
	// Authorities that may sign the images; each is a public key or a keyless (Fulcio certificate)
	// identity.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	// +required
	Authorities []Authority `json:"authorities"`

	// Attestations that must be present, signed by the named authority, and satisfy their condition.
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	// +optional
	Attestations []AttestationRequirement `json:"attestations,omitempty"`

	// Require is how many authorities must have verified a signature; default all of them.
	// +kubebuilder:validation:Minimum=1
	// +optional
	Require *int32 `json:"require,omitempty"`

	// SignatureRepository is the repository, on the same registry, where signatures and attestations
	// are stored when not beside the image (cosign's COSIGN_REPOSITORY), e.g. `signatures/app`.
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern="^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*$"
	// +optional
	SignatureRepository string `json:"signatureRepository,omitempty"`

	// IndexPolicy decides what must be signed for a multi-platform image: `Index` (the index digest),
	// `Platforms` (every platform manifest) or `Either` (the default).
	// +kubebuilder:default=Either
	// +optional
	IndexPolicy IndexPolicy `json:"indexPolicy,omitempty"`

	// RecheckInterval is how long a verification result stands for an unchanged digest (a Go
	// duration; default 24h; from 1m to 720h). A digest is verified again before then when its
	// signature or attestation tags change (the listing sees their digests change), when its
	// referrers change (on registries with the OCI referrers API, one referrers GET per digest each
	// Registry interval tells), and when this policy's verification spec or key material changes.
	// With signatureRepository (tags the listing does not read), at most the Registry's interval.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('720h')",message="recheckInterval must be between 1m and 720h"
	// +optional
	RecheckInterval *metav1.Duration `json:"recheckInterval,omitempty"`
}

// Authority is one trusted signer: exactly one of key, keyless (both cosign) or notation.
// +kubebuilder:validation:XValidation:rule="[has(self.key), has(self.keyless), has(self.notation)].filter(x, x).size() == 1",message="exactly one of key, keyless or notation must be set"
type Authority struct {
	// Name identifies the authority in results and in attestations[].authority (a DNS label).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
	// +required
	Name string `json:"name"`

	// Key is a public key (PEM: ECDSA P-256/P-384, RSA or Ed25519).
	// +optional
	Key *KeyAuthority `json:"key,omitempty"`

	// Keyless is a certificate identity issued by a Fulcio CA in a sigstore trusted root.
	// +optional
	Keyless *KeylessAuthority `json:"keyless,omitempty"`

	// Notation trusts Notary Project signatures (made with the notation CLI or notation-go), found as
	// OCI 1.1 referrers of the digest or through the referrers fallback tag.
	// +optional
	Notation *NotationAuthority `json:"notation,omitempty"`

	// IgnoreTransparencyLog accepts signatures that carry no transparency-log (Rekor) entry, as made by
	// `cosign sign --tlog-upload=false` (cosign's `--insecure-ignore-tlog`). Default false. Not used
	// by notation authorities (Notary Project signatures have no log).
	// +optional
	IgnoreTransparencyLog bool `json:"ignoreTransparencyLog,omitempty"`
}

// NotationAuthority trusts Notary Project signatures (https://notaryproject.dev/docs/): signature
// manifests with artifact type `application/vnd.cncf.notary.signature` whose JWS or COSE envelope
// is verified with notation-go as `notation verify` does with a trust policy of verificationLevel
// `strict` (integrity, authenticity against the trust store, trusted identity, expiry, and the
// signing certificate's validity), scoped to this authority alone. Revocation (OCSP, CRL) is not
// checked: the manager reaches only the registries the admin allowed.
type NotationAuthority struct {
	// TrustStoreRef names the Secret or ConfigMap key, in the policy's namespace, holding the PEM
	// certificates of the trust store (the Notary Project's trust store type `ca`, as
	// `notation cert add --type ca` fills it): every signing certificate chain must end in one.
	// +required
	TrustStoreRef CertificatesReference `json:"trustStoreRef"`

	// TrustedIdentities are the signing certificates accepted, as in a Notary Project trust policy:
	// `x509.subject:<distinguished name>` (e.g. `x509.subject:C=US, ST=WA, O=Example, CN=release`;
	// the Notary Project requires at least C, ST and O; the certificate's subject must hold every
	// attribute given), or `*` for any certificate that chains to the trust store. An identity that
	// notation-go rejects marks the policy Stalled with its message.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.all(i, i == '*' || i.startsWith('x509.subject:'))",message="each trusted identity is '*' or 'x509.subject:<distinguished name>'"
	// +required
	TrustedIdentities []string `json:"trustedIdentities"`
}

// CertificatesReference names a Secret or ConfigMap key, in the policy's namespace, holding PEM
// certificates.
type CertificatesReference struct {
	// Kind of the object: `Secret` or `ConfigMap`.
	// +kubebuilder:validation:Enum=Secret;ConfigMap
	// +kubebuilder:default=ConfigMap
	// +optional
	Kind string `json:"kind,omitempty"`

	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`

	// Key holding the PEM certificates; default `ca.crt`.
	// +kubebuilder:default=ca.crt
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// KeyAuthority is a public key, from a Secret or inline: exactly one of secretRef or data.
// +kubebuilder:validation:XValidation:rule="has(self.secretRef) != has(self.data)",message="exactly one of secretRef or data must be set"
type KeyAuthority struct {
	// SecretRef names the Secret key, in the policy's namespace, that holds the PEM public key.
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`

	// Data is the PEM public key inline.
	// +kubebuilder:validation:MaxLength=16384
	// +kubebuilder:validation:XValidation:rule="self.contains('-----BEGIN PUBLIC KEY-----')",message="data must be a PEM public key"
	// +optional
	Data string `json:"data,omitempty"`
	// TrustedRootRef names a sigstore trusted root (`trusted_root.json`) whose transparency logs
	// (`tlogs`) verify the signature's Rekor entry offline, as `cosign verify --key` does with the
	// public-good or a private Rekor: the entry's signed entry timestamp (legacy `.sig` signatures,
	// the `dev.sigstore.cosign/bundle` annotation) or its inclusion proof and promise (sigstore
	// bundles) must be signed by one of those logs and record this very signature and key. With it,
	// signatures made by `cosign sign --key` with a transparency log verify without
	// ignoreTransparencyLog; a signature with no entry, or an entry of another log, fails with
	// TransparencyLogUnverifiable. Only the root's `tlogs` are read. Without it a key authority
	// cannot check a transparency log and needs ignoreTransparencyLog: true.
	// +optional
	TrustedRootRef *TrustedRootReference `json:"trustedRootRef,omitempty"`
}

// KeylessAuthority is a signer identity in a Fulcio certificate: the OIDC issuer and the subject,
// exactly or by regular expression (RE2), verified against a sigstore trusted root.
// +kubebuilder:validation:XValidation:rule="has(self.subject) != has(self.subjectRegExp)",message="exactly one of subject or subjectRegExp must be set"
type KeylessAuthority struct {
	// Issuer is the OIDC issuer URL the certificate must carry, e.g.
	// `https://token.actions.githubusercontent.com`.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +required
	Issuer string `json:"issuer"`

	// Subject is the exact certificate identity (an email or URI SAN).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Subject string `json:"subject,omitempty"`

	// SubjectRegExp is an RE2 regular expression the certificate identity must match in full.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	SubjectRegExp string `json:"subjectRegExp,omitempty"`

	// TrustedRootRef names the sigstore trusted root (`trusted_root.json` format,
	// https://github.com/sigstore/protobuf-specs) to verify against, so private and air-gapped
	// deployments work.
	// +required
	TrustedRootRef TrustedRootReference `json:"trustedRootRef"`

	// IgnoreSCT accepts certificates without an embedded signed certificate timestamp (cosign's
	// `--insecure-ignore-sct`). Default false.
	// +optional
	IgnoreSCT bool `json:"ignoreSCT,omitempty"`

	// UseSignedTimestamps verifies RFC 3161 timestamps on signatures against the timestamp
	// authorities of the trusted root (cosign's `--use-signed-timestamps`), so a short-lived
	// certificate that has expired since passes when a valid timestamp proves it was valid at
	// signing time. A timestamp that does not verify fails the signature (TimestampInvalid); without
	// one, an expired certificate fails (TimestampMissing). Default false.
	// +optional
	UseSignedTimestamps bool `json:"useSignedTimestamps,omitempty"`
}

// TrustedRootReference names a Secret or ConfigMap key in the policy's namespace.
type TrustedRootReference struct {
	// Kind of the object: `Secret` or `ConfigMap`.
	// +kubebuilder:validation:Enum=Secret;ConfigMap
	// +kubebuilder:default=ConfigMap
	// +optional
	Kind string `json:"kind,omitempty"`

	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Name string `json:"name"`

	// Key holding the trusted root JSON; default `trusted_root.json`.
	// +kubebuilder:default=trusted_root.json
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// AttestationRequirement is an in-toto attestation (DSSE envelope) that must be present for the digest.
type AttestationRequirement struct {
	// Name identifies the requirement in results.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
	// +required
	Name string `json:"name"`

	// PredicateType is the in-toto predicate type URI, e.g. `https://slsa.dev/provenance/v1`,
	// `https://spdx.dev/Document`, `https://cyclonedx.org/bom`, `https://cosign.sigstore.dev/attestation/vuln/v1`,
	// or a custom URI.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +required
	PredicateType string `json:"predicateType"`

	// Authority is the name of the authority in authorities that must have signed the attestation.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +required
	Authority string `json:"authority"`

	// Condition is a CEL expression (https://github.com/google/cel-spec) over `predicate` (the
	// statement's predicate as JSON) that must be true, e.g.
	// `predicate.buildDefinition.buildType == "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1"`.
	// Empty means presence is enough.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Condition string `json:"condition,omitempty"`
}
