// Package verify checks cosign signatures of image digests (https://docs.sigstore.dev/cosign/) with
// the cosign library, in-process: a policy's verification spec is compiled once into a Verifier, then
// Verify(ctx, digest) returns a typed result per authority (verified or not, who signed, and why not).
//
// This first part covers public-key authorities and signatures stored with cosign's tag scheme
// (`<repo>:sha256-<hex>.sig`, or in spec.signatureRepository). Keyless identities, attestations,
// OCI 1.1 referrers and index policies build on it.
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
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	sigsig "github.com/sigstore/cosign/v2/pkg/signature"
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
	// ReasonUnsupported: the authority uses a feature this build does not verify yet; it never passes.
	ReasonUnsupported = "Unsupported"
)

// ErrRegistry wraps a failure to fetch signatures: transient, never a failed verification.
var ErrRegistry = errors.New("fetching signatures failed")

// Keys maps an authority name to the PEM public key the controller read for it (from key.data or the
// referenced Secret).
type Keys map[string][]byte

// Verifier verifies digests against one compiled verification spec. Safe for concurrent use.
type Verifier struct {
	authorities []authority
	require     int
	sigRepo     string
	remoteOpts  []remote.Option
}

type authority struct {
	name        string
	verifier    signature.Verifier // nil when unsupported
	unsupported string
	ignoreTlog  bool
}

// Compile builds a Verifier from a policy's verification spec and the keys read for it. It fails
// when a key does not parse (the policy is then Stalled with the message). remoteOpts configure
// registry access (transport, credentials) for fetching signatures.
func Compile(spec *v1alpha1.VerificationSpec, keys Keys, remoteOpts ...remote.Option) (*Verifier, error) {
	v := &Verifier{require: len(spec.Authorities), sigRepo: spec.SignatureRepository, remoteOpts: remoteOpts}
	if spec.Require != nil {
		v.require = int(*spec.Require)
	}
	for _, a := range spec.Authorities {
		ca := authority{name: a.Name, ignoreTlog: a.IgnoreTransparencyLog}
		switch {
		case a.Key != nil:
			pem, ok := keys[a.Name]
			if !ok {
				return nil, fmt.Errorf("authority %q: no key material", a.Name)
			}
			ver, err := keyVerifier(pem)
			if err != nil {
				return nil, fmt.Errorf("authority %q: %w", a.Name, err)
			}
			ca.verifier = ver
		default:
			ca.unsupported = "keyless verification is not implemented yet"
		}
		v.authorities = append(v.authorities, ca)
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
	// Signer names who signed: "key <name>" for a key authority.
	Signer string
	// Reason is one of the Reason* constants when not verified; Message explains it.
	Reason, Message string
}

// Result is the outcome for a digest.
type Result struct {
	// Authorities has one result per authority, in spec order.
	Authorities []AuthorityResult
	// Verified is true when at least `require` authorities verified.
	Verified bool
}

// Verify fetches the digest's signatures once and checks them against every authority. A registry
// failure while fetching returns an error wrapping ErrRegistry (transient: keep the last verdict); a
// signature that does not verify is a Result, not an error.
func (v *Verifier) Verify(ctx context.Context, digest name.Digest) (Result, error) {
	h, err := v1.NewHash(digest.DigestStr())
	if err != nil {
		return Result{}, fmt.Errorf("digest %s: %w", digest, err)
	}
	sigs, err := v.signatures(ctx, digest)
	if err != nil {
		return Result{}, err
	}
	res := Result{}
	verified := 0
	for _, a := range v.authorities {
		ar := a.check(ctx, sigs, h)
		if ar.Verified {
			verified++
		}
		res.Authorities = append(res.Authorities, ar)
	}
	res.Verified = verified >= v.require && v.require > 0
	return res, nil
}

// signatures fetches the cosign signature image of digest (tag scheme), from signatureRepository
// when set. None found is an empty list.
func (v *Verifier) signatures(ctx context.Context, digest name.Digest) ([]oci.Signature, error) {
	opts := []ociremote.Option{ociremote.WithRemoteOptions(append([]remote.Option{remote.WithContext(ctx)}, v.remoteOpts...)...)}
	if v.sigRepo != "" {
		repo, err := name.NewRepository(digest.RegistryStr()+"/"+v.sigRepo, nameOpts(digest)...)
		if err != nil {
			return nil, fmt.Errorf("signatureRepository %q: %w", v.sigRepo, err)
		}
		opts = append(opts, ociremote.WithTargetRepository(repo))
	}
	tag, err := ociremote.SignatureTag(digest, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRegistry, err)
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

func nameOpts(d name.Digest) []name.Option {
	if d.Scheme() == "http" {
		return []name.Option{name.Insecure}
	}
	return nil
}

// check verifies sigs against one authority and explains a failure.
func (a authority) check(ctx context.Context, sigs []oci.Signature, h v1.Hash) AuthorityResult {
	r := AuthorityResult{Name: a.name}
	if a.verifier == nil {
		r.Reason, r.Message = ReasonUnsupported, a.unsupported
		return r
	}
	if len(sigs) == 0 {
		r.Reason, r.Message = ReasonSignatureMissing, "no cosign signature found for the digest"
		return r
	}
	// ClaimVerifier ties the signed payload to this digest: without it cosign checks only that the
	// key signed *something*, and a signature copied from another image would pass.
	co := &cosign.CheckOpts{SigVerifier: a.verifier, ClaimVerifier: cosign.SimpleClaimVerifier, IgnoreTlog: true, IgnoreSCT: true}
	reason, msg := ReasonKeyMismatch, fmt.Sprintf("none of %d signatures verifies with the key", len(sigs))
	for _, sig := range sigs {
		if _, err := cosign.VerifyImageSignature(ctx, sig, h, co); err != nil {
			if isDigestMismatch(err) {
				reason, msg = ReasonDigestMismatch, "a signature by the key signs another digest"
			}
			continue
		}
		if !a.ignoreTlog {
			reason, msg = ReasonTransparencyLogUnverifiable,
				"a signature by the key verifies, but its transparency-log entry cannot be verified without the log's keys; set ignoreTransparencyLog: true to accept signatures made with --tlog-upload=false"
			continue
		}
		r.Verified, r.Signer = true, "key "+a.name
		return r
	}
	r.Reason, r.Message = reason, msg
	return r
}

// isDigestMismatch recognises cosign.SimpleClaimVerifier's error for a payload naming another digest.
func isDigestMismatch(err error) bool {
	return err != nil && strings.Contains(err.Error(), "invalid or missing digest in claim")
}
