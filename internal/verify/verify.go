// Package verify checks cosign signatures of image digests (https://docs.sigstore.dev/cosign/) with
// the cosign library, in-process: a policy's verification spec is compiled once into a Verifier, then
// Verify(ctx, digest) returns a typed result per authority (verified or not, who signed, and why not).
//
// Authorities are public keys or keyless identities (Fulcio certificates checked against a sigstore
// trusted root given by the user, so air-gapped deployments work), or Notary Project trust stores
// and identities. Signatures are read from cosign's tag scheme (`<repo>:sha256-<hex>.sig`, or in
// spec.signatureRepository) and from the digest's OCI 1.1 referrers (sigstore bundles, legacy
// cosign signatures, Notary Project envelopes).
//
// One verification path per format, each the signer's own library: the cosign v2 library for
// cosign's legacy formats, sigstore-go for sigstore bundles (cosign v2 cannot verify bundle-format
// image signatures), and notation-go for Notary Project signatures. This package finds and fetches
// what they verify, through the Registry's transport, and maps their failures to typed reasons.
package verify

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	sigsig "github.com/sigstore/cosign/v2/pkg/signature"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/signature"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Reasons an authority did not verify (AuthorityResult.Reason).
const (
	// ReasonSignatureMissing: no signature was found where the policy says signatures live.
	ReasonSignatureMissing = "SignatureMissing"
	// ReasonKeyMismatch: signatures were found, but none verifies with the authority's key.
	ReasonKeyMismatch = "KeyMismatch"
	// ReasonDigestMismatch: a signature verifies with the key but signs another digest.
	ReasonDigestMismatch = "DigestMismatch"
	// ReasonTransparencyLogUnverifiable: a signature verifies with the key, but the authority requires
	// a transparency-log entry (ignoreTransparencyLog: false) and Portcullis cannot verify one for it
	// (that needs the log's keys from a trusted root). Fail-safe: it never passes.
	ReasonTransparencyLogUnverifiable = "TransparencyLogUnverifiable"
	// ReasonSignatureInvalid: a keyless signature does not verify with its certificate's key.
	ReasonSignatureInvalid = "SignatureInvalid"
	// ReasonCertificateMissing: a keyless authority found a signature without a certificate.
	ReasonCertificateMissing = "CertificateMissing"
	// ReasonCertificateUntrusted: the certificate does not chain to a CA of the trusted root.
	ReasonCertificateUntrusted = "CertificateUntrusted"
	// ReasonIdentityMismatch: the certificate's identity or issuer is not the authority's.
	ReasonIdentityMismatch = "IdentityMismatch"
	// ReasonCertificateExpired: the certificate was not valid at the time checked.
	ReasonCertificateExpired = "CertificateExpired"
	// ReasonTimestampMissing: the certificate has expired (as Fulcio's short-lived ones do) and no
	// transparency-log or timestamp-authority time proves it was valid when the image was signed.
	ReasonTimestampMissing = "TimestampMissing"
	// ReasonTimestampInvalid: the signature's RFC 3161 timestamp does not verify against the trusted
	// root's timestamp authorities.
	ReasonTimestampInvalid = "TimestampInvalid"
)

// Checks names the signature formats and checks Verify implements; it changes whenever a digest
// could verify differently with the same policy and signatures (callers key stored results with it).
// v2: sigstore bundles (cosign v3) as referrers and through the referrers fallback tag.
// v3: an index's platform manifests are verified under every index policy (the signed level is
// reported).
// v4: Notary Project signatures (notation authorities).
// v5: OpenVEX attestations of VEX authorities (Result.VEX).
const Checks = "v5"

// ErrRegistry wraps a failure to fetch signatures: transient, never a failed verification.
var ErrRegistry = errors.New("fetching signatures failed")

// Material maps an authority name to what the controller read for it: the PEM public key of a key
// authority (key.data or the referenced Secret), the trusted_root.json of a keyless authority; and
// KeyTrustedRoot(name) to a key authority's optional trusted root (key.trustedRootRef).
type Material map[string][]byte

// KeyTrustedRoot is the Material entry of a key authority's trusted root (authority names are DNS
// labels, so it never collides with one).
func KeyTrustedRoot(authority string) string { return authority + "/trusted-root" }

// Verifier verifies digests against one compiled verification spec. Safe for concurrent use.
type Verifier struct {
	authorities  []authority
	attestations []attestation
	require      int
	sigRepo      string
	remoteOpts   []remote.Option
	known        *Known
	// notation says some authority verifies Notary Project signatures (only then are they fetched).
	notation bool
	// vex are the authorities (indices) whose OpenVEX attestations are collected (WithVEX).
	vex []int
}

// Known is what a listing of the repository already told about a digest's supply-chain artifacts,
// so that a verification does not ask for what is not there.
type Known struct {
	// Tags is the set of supply-chain tags the repository had at its listing (cosign's
	// `sha256-<hex>.sig` and `.att`, the referrers fallback tag `sha256-<hex>`). A signature or
	// attestation tag absent from it is not requested. It is ignored when the policy sets
	// signatureRepository (another repository, not listed).
	Tags map[string]bool
	// NoReferrersAPI says the registry answered 404 to the referrers API
	// (`GET /v2/<name>/referrers/<digest>`): with the fallback tag absent from Tags, referrers are not
	// requested at all.
	NoReferrersAPI bool
}

// With returns a Verifier that verifies with the same compiled authorities but reaches the registry
// with remoteOpts (transport, credentials, a shared Puller: see registry.Client.RemoteOptions) and
// skips what known says is absent (nil: request everything). Compile once per policy and key
// material; call With per verification.
func (v *Verifier) With(known *Known, remoteOpts ...remote.Option) *Verifier {
	w := *v
	w.remoteOpts, w.known = remoteOpts, known
	return &w
}

// absent reports whether the listing showed that tag is not in the digest's repository.
func (v *Verifier) absent(tag string) bool {
	return v.known != nil && v.known.Tags != nil && v.sigRepo == "" && !v.known.Tags[tag]
}

type authority struct {
	name       string
	verifier   signature.Verifier // key authorities
	keyless    *keyless           // keyless authorities
	notation   *notationCheck     // notation authorities (Notary Project signatures)
	ignoreTlog bool
	// keyLogs is a key authority's trusted root (key.trustedRootRef): the transparency logs its
	// signatures' entries are verified against. Nil: a key authority cannot check a log.
	keyLogs *root.TrustedRoot
	bundle  *bundleCheck // sigstore-go, for bundle-format signatures and attestations
	// plainBundle is bundle without the transparency log, for a key authority with keyLogs: it
	// tells a bundle by another key from one whose log entry does not verify.
	plainBundle *bundleCheck
}

// tlogUnverifiable reports whether the authority requires a transparency-log entry it has no log
// keys to verify (a key authority without a trusted root and without ignoreTransparencyLog).
func (a authority) tlogUnverifiable() bool {
	return a.keyless == nil && a.notation == nil && !a.ignoreTlog && a.keyLogs == nil
}

// Compile builds a Verifier from a policy's verification spec and the keys read for it. It fails
// when a key does not parse (the policy is then Stalled with the message). remoteOpts configure
// registry access (transport, credentials) for fetching signatures.
func Compile(spec *v1alpha1.VerificationSpec, material Material, remoteOpts ...remote.Option) (*Verifier, error) {
	v := &Verifier{require: len(spec.Authorities), sigRepo: spec.SignatureRepository, remoteOpts: remoteOpts}
	if spec.Require != nil {
		v.require = int(*spec.Require)
	}
	for _, a := range spec.Authorities {
		ca := authority{name: a.Name, ignoreTlog: a.IgnoreTransparencyLog}
		data, ok := material[a.Name]
		if !ok {
			return nil, fmt.Errorf("authority %q: no key or trusted root", a.Name)
		}
		switch {
		case a.Key != nil:
			ver, err := keyVerifier(data)
			if err != nil {
				return nil, fmt.Errorf("authority %q: %w", a.Name, err)
			}
			ca.verifier = ver
			if rootJSON, ok := material[KeyTrustedRoot(a.Name)]; ok {
				tr, err := root.NewTrustedRootFromJSON(rootJSON)
				if err != nil {
					return nil, fmt.Errorf("authority %q: parsing the trusted root: %w", a.Name, err)
				}
				if len(tr.RekorLogs()) == 0 {
					return nil, fmt.Errorf("authority %q: the trusted root lists no transparency log (tlogs)", a.Name)
				}
				ca.keyLogs = tr
			}
		case a.Keyless != nil:
			kl, err := compileKeyless(a.Keyless, data)
			if err != nil {
				return nil, fmt.Errorf("authority %q: %w", a.Name, err)
			}
			ca.keyless = kl
		case a.Notation != nil:
			nc, err := compileNotation(a.Name, a.Notation.TrustedIdentities, data)
			if err != nil {
				return nil, fmt.Errorf("authority %q: %w", a.Name, err)
			}
			ca.notation, v.notation = nc, true
			v.authorities = append(v.authorities, ca)
			continue
		default:
			return nil, fmt.Errorf("authority %q: none of key, keyless or notation", a.Name)
		}
		bc, err := compileBundleCheck(ca)
		if err != nil {
			return nil, fmt.Errorf("authority %q: %w", a.Name, err)
		}
		ca.bundle = bc
		if ca.keyLogs != nil && !ca.ignoreTlog {
			plain := ca
			plain.keyLogs = nil
			if ca.plainBundle, err = compileBundleCheck(plain); err != nil {
				return nil, fmt.Errorf("authority %q: %w", a.Name, err)
			}
		}
		v.authorities = append(v.authorities, ca)
	}
	if err := v.compileAttestations(spec.Attestations); err != nil {
		return nil, err
	}
	return v, nil
}

// keyVerifier accepts a PEM public key (ECDSA P-256/P-384/P-521, RSA, Ed25519) and verifies
// signatures made over a SHA-256, SHA-384 or SHA-512 digest of the payload (cosign's
// --signing-algorithm choices), trying each.
func keyVerifier(pem []byte) (signature.Verifier, error) {
	var vs []signature.Verifier
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		v, err := sigsig.LoadPublicKeyRaw(pem, h)
		if err != nil {
			return nil, fmt.Errorf("parsing the public key: %w", err)
		}
		vs = append(vs, v)
	}
	return anyHash(vs), nil
}

// anyHash is a signature.Verifier that accepts a signature any of its verifiers accepts.
type anyHash []signature.Verifier

func (a anyHash) PublicKey(opts ...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return a[0].PublicKey(opts...)
}

func (a anyHash) VerifySignature(sig, msg io.Reader, opts ...signature.VerifyOption) error {
	s, err := io.ReadAll(sig)
	if err != nil {
		return err
	}
	m, err := io.ReadAll(msg)
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range a {
		if err := v.VerifySignature(bytes.NewReader(s), bytes.NewReader(m), opts...); err == nil {
			return nil
		} else {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var _ signature.Verifier = anyHash(nil)

// AuthorityResult is the outcome of one authority for a digest.
type AuthorityResult struct {
	// Name of the authority.
	Name string
	// Verified is true when a signature by the authority verified for this digest.
	Verified bool
	// Signer names who signed: "key <name>" for a key authority, the certificate identity (email or
	// URI) for a keyless one; Issuer is the keyless certificate's OIDC issuer.
	Signer, Issuer string
	// Reason is one of the Reason* constants when not verified; Message explains it.
	Reason, Message string
}

// Result is the outcome for a digest.
type Result struct {
	// Authorities has one result per authority, in spec order.
	Authorities []AuthorityResult
	// Attestations has one result per attestation requirement, in spec order.
	Attestations []AttestationResult
	// Verified is true when at least `require` authorities verified and every attestation
	// requirement passed.
	Verified bool
	// VEX are the OpenVEX documents a VEX authority signed for the digest (WithVEX); VEXIgnored
	// says which others were found and why they are not applied ("<source digest>: <why>").
	VEX        []VEXDocument
	VEXIgnored []string
}

// Verify fetches the digest's signatures and attestations once, in every format cosign writes (the
// legacy `.sig`/`.att` tags, legacy signatures as OCI 1.1 referrers, and sigstore bundles as
// referrers or under the referrers fallback tag), and checks them against every authority: an
// authority verifies when a signature in any format does. A registry failure while fetching returns
// an error wrapping ErrRegistry (transient: keep the last verdict); a signature that does not verify
// is a Result, not an error.
func (v *Verifier) Verify(ctx context.Context, digest name.Digest) (Result, error) {
	h, err := v1.NewHash(digest.DigestStr())
	if err != nil {
		return Result{}, fmt.Errorf("digest %s: %w", digest, err)
	}
	sigs, err := v.fetch(ctx, digest, ociremote.SignatureTag)
	if err != nil {
		return Result{}, err
	}
	refSigs, bundles, notations, err := v.referrerArtifacts(ctx, digest)
	if err != nil {
		return Result{}, err
	}
	sigs = append(sigs, refSigs...)
	var sigBundles, attBundles []foundBundle
	for _, b := range bundles {
		if b.problem != "" || b.isSignature() {
			sigBundles = append(sigBundles, b)
		}
		if b.problem != "" || !b.isSignature() {
			attBundles = append(attBundles, b)
		}
	}
	res := Result{}
	verified := 0
	var target *ocispec.Descriptor // the digest's manifest descriptor, which Notary Project signatures sign
	for _, a := range v.authorities {
		var ar AuthorityResult
		if a.notation != nil {
			if target == nil && len(notations) > 0 {
				if target, err = v.describe(ctx, digest); err != nil {
					return Result{}, err
				}
			}
			var t ocispec.Descriptor
			if target != nil {
				t = *target
			}
			ar = a.notation.check(ctx, a.name, notations, digest, t)
		} else {
			ar = a.check(ctx, sigs, sigBundles, h)
		}
		if ar.Verified {
			verified++
		}
		res.Authorities = append(res.Authorities, ar)
	}
	res.Verified = verified >= v.require && v.require > 0
	if len(v.attestations) > 0 || len(v.vex) > 0 {
		atts, err := v.fetch(ctx, digest, ociremote.AttestationTag)
		if err != nil {
			return Result{}, err
		}
		for _, req := range v.attestations {
			ar := v.checkAttestation(ctx, req, atts, attBundles, h)
			res.Verified = res.Verified && ar.Verified
			res.Attestations = append(res.Attestations, ar)
		}
		if len(v.vex) > 0 {
			res.VEX, res.VEXIgnored = v.collectVEX(ctx, atts, attBundles, h)
		}
	}
	return res, nil
}

// fetch reads the cosign signature or attestation image of digest (tag scheme: tagOf is
// ociremote.SignatureTag or AttestationTag), from signatureRepository when set. None found is an
// empty list.
func (v *Verifier) fetch(ctx context.Context, digest name.Digest, tagOf func(name.Reference, ...ociremote.Option) (name.Tag, error)) ([]oci.Signature, error) {
	opts := v.remoteOptions(ctx)
	if v.sigRepo != "" {
		repo, err := name.NewRepository(digest.RegistryStr()+"/"+v.sigRepo, nameOpts(digest)...)
		if err != nil {
			return nil, fmt.Errorf("signatureRepository %q: %w", v.sigRepo, err)
		}
		opts = append(opts, ociremote.WithTargetRepository(repo))
	}
	tag, err := tagOf(digest, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRegistry, err)
	}
	if v.absent(tag.TagStr()) {
		return nil, nil // the listing found no such tag: none to read
	}
	sigImg, err := ociremote.Signatures(tag, opts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: reading %s: %w", ErrRegistry, tag, err)
	}
	sigs, err := sigImg.Get()
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrRegistry, tag, err)
	}
	return sigs, nil
}

// sigArtifactType is the artifact type of a legacy cosign signature stored as an OCI 1.1 referrer
// (`cosign sign --registry-referrers-mode=oci-1-1` without the bundle format, cosign v2's
// experimental OCI 1.1 support).
const sigArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"

// legacyReferrer reads the legacy cosign signatures in one referrer manifest (sigArtifactType).
func (v *Verifier) legacyReferrer(ctx context.Context, digest name.Digest, manifest string) ([]oci.Signature, error) {
	ref := digest.Context().Digest(manifest)
	img, err := ociremote.Signatures(ref, v.remoteOptions(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("%w: reading referrer %s: %w", ErrRegistry, ref, err)
	}
	sigs, err := img.Get()
	if err != nil {
		return nil, fmt.Errorf("%w: reading referrer %s: %w", ErrRegistry, ref, err)
	}
	return sigs, nil
}

func (v *Verifier) remoteOptions(ctx context.Context) []ociremote.Option {
	return []ociremote.Option{ociremote.WithRemoteOptions(append([]remote.Option{remote.WithContext(ctx)}, v.remoteOpts...)...)}
}

func nameOpts(d name.Digest) []name.Option {
	if d.Scheme() == "http" {
		return []name.Option{name.Insecure}
	}
	return nil
}

// check verifies sigs (legacy format) and bundles against one authority and explains a failure.
func (a authority) check(ctx context.Context, sigs []oci.Signature, bundles []foundBundle, h v1.Hash) AuthorityResult {
	r := AuthorityResult{Name: a.name}
	if len(sigs) == 0 && len(bundles) == 0 {
		r.Reason, r.Message = ReasonSignatureMissing, "no cosign signature found for the digest (neither the .sig tag nor a signature or bundle referrer)"
		return r
	}
	co := a.checkOpts(cosign.SimpleClaimVerifier)
	best := failure{rank: -1}
	tlogUnverifiable := failure{rank: 5, reason: ReasonTransparencyLogUnverifiable,
		message: "a signature by the key verifies, but its transparency-log entry cannot be verified without the log's keys; set ignoreTransparencyLog: true to accept signatures made with --tlog-upload=false"}
	for _, sig := range sigs {
		if co.UseSignedTimestamps {
			if err := checkTimestamp(sig, co); err != nil {
				best = best.worse(failure{5, ReasonTimestampInvalid, err.Error()})
				continue
			}
		}
		if _, err := cosign.VerifyImageSignature(ctx, sig, h, co); err != nil {
			best = best.worse(a.legacyFailure(ctx, sig, h, co, err))
			continue
		}
		if a.tlogUnverifiable() {
			best = best.worse(tlogUnverifiable)
			continue
		}
		r.Verified = true
		r.Signer, r.Issuer = "key "+a.name, ""
		if a.keyless != nil {
			r.Signer, r.Issuer = signerOf(sig)
		}
		return r
	}
	for _, b := range bundles {
		if b.problem != "" {
			best = best.worse(failure{0, ReasonSignatureInvalid, "a sigstore bundle referrer cannot be used: " + b.problem})
			continue
		}
		out, err := a.bundle.verify(b, h)
		if err != nil {
			best = best.worse(a.bundleFailure(b, h, err))
			continue
		}
		if a.tlogUnverifiable() {
			best = best.worse(tlogUnverifiable)
			continue
		}
		r.Verified = true
		r.Signer, r.Issuer = "key "+a.name, ""
		if a.keyless != nil && out.Signature != nil && out.Signature.Certificate != nil {
			r.Signer, r.Issuer = out.Signature.Certificate.SubjectAlternativeName, out.Signature.Certificate.Issuer
		}
		return r
	}
	r.Reason, r.Message = best.reason, fmt.Sprintf("%d signature(s) found, none verifies: %s", len(sigs)+len(bundles), best.message)
	return r
}

// legacyFailure explains err, cosign's failure for sig. cosign checks a key authority's log entry
// before the signature, so with key.trustedRootRef a signature by another key would read as a log
// problem: the signature is checked again without the log to tell the two apart.
func (a authority) legacyFailure(ctx context.Context, sig oci.Signature, h v1.Hash, co *cosign.CheckOpts, err error) failure {
	if a.keyLogs == nil || a.ignoreTlog {
		return classifyFailure(a.keyless != nil, err)
	}
	plain := *co
	plain.IgnoreTlog, plain.TrustedMaterial, plain.Offline = true, nil, false
	if _, perr := cosign.VerifyImageSignature(ctx, sig, h, &plain); perr != nil {
		return classifyFailure(false, perr)
	}
	return failure{5, ReasonTransparencyLogUnverifiable, truncate("a signature by the key verifies, but its transparency-log entry does not: "+err.Error(), 300)}
}

// bundleFailure is legacyFailure for a sigstore bundle.
func (a authority) bundleFailure(b foundBundle, h v1.Hash, err error) failure {
	if a.plainBundle == nil {
		return classifyBundleFailure(a.keyless != nil, err)
	}
	if _, perr := a.plainBundle.verify(b, h); perr != nil {
		return classifyBundleFailure(false, perr)
	}
	return failure{5, ReasonTransparencyLogUnverifiable, truncate("a bundle by the key verifies, but its transparency-log entry does not: "+err.Error(), 300)}
}

// checkOpts are cosign's options for this authority. The claim verifier ties the signed payload to
// the digest: without it cosign checks only that the authority signed *something*, and a signature
// copied from another image would pass. A key authority checks the transparency log only with a
// trusted root (key.trustedRootRef); without one, check reports TransparencyLogUnverifiable.
func (a authority) checkOpts(claims func(oci.Signature, v1.Hash, map[string]any) error) *cosign.CheckOpts {
	co := &cosign.CheckOpts{ClaimVerifier: claims, IgnoreTlog: true, IgnoreSCT: true}
	if a.keyless != nil {
		a.keyless.apply(co)
		co.IgnoreTlog = a.ignoreTlog
	} else {
		co.SigVerifier = a.verifier
		if a.keyLogs != nil && !a.ignoreTlog {
			// The Rekor bundle annotation's signed entry timestamp, checked against the root's logs;
			// never an online lookup.
			co.IgnoreTlog, co.TrustedMaterial, co.Offline = false, a.keyLogs, true
		}
	}
	return co
}

// checkTimestamp verifies a signature's RFC 3161 timestamp, if it has one, against the trusted
// root's timestamp authorities before cosign does: cosign v2.6.5 panics (index out of range) when
// every timestamp fails against a trusted root, and a bad timestamp must be a reason, not a crash.
func checkTimestamp(sig oci.Signature, co *cosign.CheckOpts) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the RFC 3161 timestamp does not verify against the trusted root's timestamp authorities")
		}
	}()
	if _, err := cosign.VerifyRFC3161Timestamp(sig, co); err != nil {
		return fmt.Errorf("the RFC 3161 timestamp does not verify: %w", err)
	}
	return nil
}

// failure is why one signature did not verify; rank orders how far it got, so the reason reported
// for several signatures is the most telling one (a matching key with the wrong digest says more than
// a signature by someone else).
type failure struct {
	rank            int
	reason, message string
}

func (f failure) worse(g failure) failure {
	if g.rank > f.rank {
		return g
	}
	return f
}

// classifyFailure maps cosign's verification errors to reasons.
func classifyFailure(keyless bool, err error) failure {
	msg := err.Error()
	var noCert *cosign.ErrNoCertificateFoundOnSignature
	switch {
	case strings.Contains(msg, "invalid or missing digest in claim"):
		return failure{6, ReasonDigestMismatch, "a signature by the authority signs another digest"}
	case errors.As(err, &noCert):
		return failure{1, ReasonCertificateMissing, "the signature carries no certificate"}
	case strings.Contains(msg, "none of the expected identities matched"):
		return failure{4, ReasonIdentityMismatch, msg}
	case strings.Contains(msg, "RFC3161 timestamp"):
		return failure{5, ReasonTimestampInvalid, msg}
	case strings.Contains(msg, "expected a signed timestamp to verify an expired certificate"):
		return failure{5, ReasonTimestampMissing, "the certificate has expired and no signed timestamp proves it was valid at signing time"}
	case strings.Contains(msg, "expired") || strings.Contains(msg, "not yet valid"):
		return failure{5, ReasonCertificateExpired, msg}
	case strings.Contains(msg, "rekor") || strings.Contains(msg, "bundle") || strings.Contains(msg, "offline verification"):
		return failure{5, ReasonTransparencyLogUnverifiable, msg}
	case strings.Contains(msg, "x509") || strings.Contains(msg, "certificate"):
		return failure{3, ReasonCertificateUntrusted, msg}
	case keyless:
		return failure{2, ReasonSignatureInvalid, msg}
	}
	return failure{2, ReasonKeyMismatch, "the signature does not verify with the authority's key"}
}
