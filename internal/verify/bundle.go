package verify

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/cosign/v2/pkg/oci"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
)

// Sigstore bundles as cosign v3 stores them (https://github.com/sigstore/cosign/blob/main/specs/BUNDLE_SPEC.md):
// an OCI 1.1 manifest whose subject is the signed digest, an empty-JSON config, and one layer holding
// the bundle (https://github.com/sigstore/protobuf-specs, sigstore_bundle.proto) with a media type
// starting with bundleMediaTypePrefix. An image signature is a DSSE bundle whose in-toto statement
// has the predicate type CosignSignPredicateType and the image digest as subject; any other predicate
// type is an attestation. A message-signature bundle over the image digest is a signature too.
const (
	bundleMediaTypePrefix = "application/vnd.dev.sigstore.bundle"
	// CosignSignPredicateType is the predicate type of the in-toto statement cosign v3 signs for
	// `cosign sign` in the bundle format (github.com/sigstore/cosign pkg/types.CosignSignPredicateType).
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"
	emptyJSONMediaType      = "application/vnd.oci.empty.v1+json"
	inTotoPayloadType       = "application/vnd.in-toto+json"
	// maxBundleBytes bounds a bundle layer read from a registry (a bundle with a certificate chain
	// and a log entry is a few KiB); a larger one is not read.
	maxBundleBytes = 1 << 20
	// maxReferrers bounds how many referrer manifests of one digest are read per verification.
	maxReferrers = 64
)

// foundBundle is a sigstore bundle read from a referrer of the digest.
type foundBundle struct {
	// manifest is the referrer manifest's digest (where the bundle is).
	manifest string
	bundle   *sgbundle.Bundle
	// statement is the DSSE envelope's in-toto statement; nil for a message-signature bundle.
	statement *statement
	// problem says why the bundle cannot count (an undecodable payload); empty when it can.
	problem string
}

// isSignature reports whether the bundle signs the image (rather than attesting something about it).
func (b foundBundle) isSignature() bool {
	return b.statement == nil || b.statement.PredicateType == CosignSignPredicateType
}

// referrerArtifacts lists the digest's referrers once (the OCI 1.1 referrers API, or the
// `sha256-<hex>` fallback tag on registries without it) and reads what Portcullis verifies from
// them: legacy cosign signatures stored as referrers (sigArtifactType) and sigstore bundles. A
// bundle is recognised from its manifest's layers, not from the index entry's artifactType or
// annotations, which cosign has written empty; entries whose artifactType says they are something
// else (an SBOM, a Notation signature) are not fetched.
func (v *Verifier) referrerArtifacts(ctx context.Context, digest name.Digest) (legacy []oci.Signature, bundles []foundBundle, notations []foundNotation, err error) {
	if v.known != nil && v.known.NoReferrersAPI && v.absent(strings.Replace(digest.DigestStr(), ":", "-", 1)) {
		return nil, nil, nil, nil // no referrers API and no fallback tag: no referrers
	}
	ropts := append([]remote.Option{remote.WithContext(ctx)}, v.remoteOpts...)
	idx, err := remote.Referrers(digest, ropts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == 404 {
			return nil, nil, nil, nil
		}
		return nil, nil, nil, fmt.Errorf("%w: listing referrers of %s: %w", ErrRegistry, digest, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: listing referrers of %s: %w", ErrRegistry, digest, err)
	}
	read := 0
	for _, d := range im.Manifests {
		at := d.ArtifactType
		switch {
		case at == sigArtifactType:
			sigs, err := v.legacyReferrer(ctx, digest, d.Digest.String())
			if err != nil {
				return nil, nil, nil, err
			}
			legacy = append(legacy, sigs...)
		case at == NotationArtifactType:
			if !v.notation {
				continue // no notation authority: not fetched
			}
			if read++; read > maxReferrers {
				continue
			}
			n, err := v.readNotation(digest.Context().Digest(d.Digest.String()), ropts)
			if err != nil {
				return nil, nil, nil, err
			}
			notations = append(notations, n)
		case at == "" || at == emptyJSONMediaType || strings.HasPrefix(at, bundleMediaTypePrefix):
			if read++; read > maxReferrers {
				continue
			}
			b, ok, err := v.readBundle(ctx, digest.Context().Digest(d.Digest.String()), ropts)
			if err != nil {
				return nil, nil, nil, err
			}
			if ok {
				bundles = append(bundles, b)
			}
		}
	}
	return legacy, bundles, notations, nil
}

// readBundle fetches a referrer manifest and, when one of its layers is a sigstore bundle, the
// bundle. ok is false for a referrer that is not a bundle; a bundle that does not parse is returned
// with a problem (it is reported, never counted).
func (v *Verifier) readBundle(ctx context.Context, ref name.Digest, ropts []remote.Option) (foundBundle, bool, error) {
	out := foundBundle{manifest: ref.DigestStr()}
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return out, false, fmt.Errorf("%w: reading referrer %s: %w", ErrRegistry, ref.DigestStr(), err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return out, false, nil // an index or something else: not a bundle
	}
	var layer *v1.Descriptor
	for i := range m.Layers {
		if strings.HasPrefix(string(m.Layers[i].MediaType), bundleMediaTypePrefix) {
			layer = &m.Layers[i]
			break
		}
	}
	if layer == nil {
		return out, false, nil
	}
	if layer.Size > maxBundleBytes {
		out.problem = fmt.Sprintf("the bundle layer is %d bytes, over the %d-byte limit", layer.Size, maxBundleBytes)
		return out, true, nil
	}
	l, err := remote.Layer(ref.Context().Digest(layer.Digest.String()), ropts...)
	if err != nil {
		return out, false, fmt.Errorf("%w: reading bundle %s: %w", ErrRegistry, layer.Digest, err)
	}
	rc, err := l.Compressed() // the digest is checked as it is read
	if err != nil {
		return out, false, fmt.Errorf("%w: reading bundle %s: %w", ErrRegistry, layer.Digest, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxBundleBytes+1))
	if err != nil {
		return out, false, fmt.Errorf("%w: reading bundle %s: %w", ErrRegistry, layer.Digest, err)
	}
	b := &sgbundle.Bundle{}
	if err := b.UnmarshalJSON(data); err != nil {
		out.problem = "the bundle does not parse: " + truncate(err.Error(), 200)
		return out, true, nil
	}
	out.bundle = b
	if env := b.GetDsseEnvelope(); env != nil {
		st := &statement{}
		if env.GetPayloadType() != inTotoPayloadType {
			out.problem = fmt.Sprintf("the DSSE payload type is %q, not an in-toto statement", env.GetPayloadType())
		} else if err := json.Unmarshal(env.GetPayload(), st); err != nil {
			out.problem = "the DSSE payload is not an in-toto statement: " + truncate(err.Error(), 200)
		}
		out.statement = st
	}
	return out, true, nil
}

// bundleCheck is an authority compiled for sigstore-go: bundle verification follows
// sigstore-go's verifier (https://github.com/sigstore/sigstore-go, pkg/verify), configured as
// cosign v3 configures it for the same authority (cosign pkg/cosign CheckOpts.verificationOptions).
type bundleCheck struct {
	keyless  bool
	verifier *sgverify.Verifier
	policy   []sgverify.PolicyOption
}

// compileBundleCheck builds the sigstore-go verifier for an authority: a key authority trusts
// exactly its key (no observer timestamp needed) and, with a trusted root (key.trustedRootRef),
// requires an entry of one of its transparency logs, checked at its integrated time; a keyless authority trusts its trusted root, requires SCTs unless ignoreSCT, a log
// entry unless ignoreTransparencyLog, and checks the certificate at the log's integrated time, the
// signed timestamp (useSignedTimestamps) or, with neither, the current time.
func compileBundleCheck(a authority) (*bundleCheck, error) {
	var tm root.TrustedMaterial
	var vopts []sgverify.VerifierOption
	var popts []sgverify.PolicyOption
	if a.keyless == nil {
		key := root.NewExpiringKey(a.verifier, time.Time{}, time.Time{})
		tm = root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return key, nil })
		if a.keyLogs != nil && !a.ignoreTlog {
			// As cosign v3 verifies `--key` with a trusted root: the key, and a log entry of one of
			// the root's logs (inclusion proof and promise) that records this signature and key.
			tm = root.TrustedMaterialCollection{tm, a.keyLogs}
			vopts = append(vopts, sgverify.WithTransparencyLog(1), sgverify.WithIntegratedTimestamps(1))
		} else {
			vopts = append(vopts, sgverify.WithNoObserverTimestamps())
		}
		popts = append(popts, sgverify.WithKey())
	} else {
		k := a.keyless
		tm = k.trust
		san, err := sgverify.NewSANMatcher(k.identity.Subject, k.identity.SubjectRegExp)
		if err != nil {
			return nil, err
		}
		iss, err := sgverify.NewIssuerMatcher(k.identity.Issuer, "")
		if err != nil {
			return nil, err
		}
		id, err := sgverify.NewCertificateIdentity(san, iss, certificate.Extensions{})
		if err != nil {
			return nil, err
		}
		popts = append(popts, sgverify.WithCertificateIdentity(id))
		if !k.ignoreSCT {
			vopts = append(vopts, sgverify.WithSignedCertificateTimestamps(1))
		}
		switch {
		case !a.ignoreTlog && !k.useTimestamps:
			vopts = append(vopts, sgverify.WithTransparencyLog(1), sgverify.WithIntegratedTimestamps(1))
		case !a.ignoreTlog:
			vopts = append(vopts, sgverify.WithTransparencyLog(1), sgverify.WithSignedTimestamps(1))
		case k.useTimestamps:
			vopts = append(vopts, sgverify.WithSignedTimestamps(1))
		default:
			vopts = append(vopts, sgverify.WithCurrentTime())
		}
	}
	v, err := sgverify.NewVerifier(tm, vopts...)
	if err != nil {
		return nil, err
	}
	return &bundleCheck{keyless: a.keyless != nil, verifier: v, policy: popts}, nil
}

// errNoCertificate is a bundle with a public-key hint checked against a keyless authority.
var errNoCertificate = errors.New("can't verify certificate identities: entity was not signed with a certificate")

// verify checks one bundle for digest h; the result's certificate summary names a keyless signer. A
// keyless authority never accepts a bundle without a certificate, whatever its key.
func (c *bundleCheck) verify(b foundBundle, h v1.Hash) (*sgverify.VerificationResult, error) {
	if c.keyless {
		vc, err := b.bundle.VerificationContent()
		if err != nil {
			return nil, err
		}
		if vc.Certificate() == nil {
			return nil, errNoCertificate
		}
	}
	raw, err := hex.DecodeString(h.Hex)
	if err != nil {
		return nil, err
	}
	return c.verifier.Verify(b.bundle, sgverify.NewPolicy(sgverify.WithArtifactDigest(h.Algorithm, raw), c.policy...))
}

// classifyBundleFailure maps sigstore-go's verification errors to reasons, ranked as
// classifyFailure ranks cosign's.
func classifyBundleFailure(keyless bool, err error) failure {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "does not match any digest in statement"), strings.Contains(msg, "do not match digests in statement"),
		strings.Contains(msg, "does not match digests in statement"), strings.Contains(msg, "artifact does not match digest"):
		return failure{6, ReasonDigestMismatch, "a signature by the authority signs another digest"}
	case strings.Contains(msg, "entity was not signed with a certificate"):
		return failure{1, ReasonCertificateMissing, "the bundle carries a public-key hint, not a certificate"}
	case strings.Contains(msg, "expected key signature, not certificate"):
		return failure{2, ReasonKeyMismatch, "the bundle carries a certificate, not a signature by the authority's key"}
	case strings.Contains(msg, "failed to verify certificate identity"):
		return failure{4, ReasonIdentityMismatch, "the certificate's identity or issuer is not the authority's: " + truncate(msg, 300)}
	case strings.Contains(msg, "failed to verify timestamps"), strings.Contains(msg, "timestamp"):
		if strings.Contains(msg, "threshold not met") || strings.Contains(msg, "not enough") {
			return failure{5, ReasonTimestampMissing, truncate(msg, 300)}
		}
		return failure{5, ReasonTimestampInvalid, truncate(msg, 300)}
	case strings.Contains(msg, "log inclusion") || strings.Contains(msg, "transparency log") || strings.Contains(msg, "tlog"):
		return failure{5, ReasonTransparencyLogUnverifiable, truncate(msg, 300)}
	case strings.Contains(msg, "expired") || strings.Contains(msg, "not yet valid"):
		return failure{5, ReasonCertificateExpired, truncate(msg, 300)}
	case strings.Contains(msg, "leaf certificate") || strings.Contains(msg, "x509") || strings.Contains(msg, "certificate"):
		return failure{3, ReasonCertificateUntrusted, truncate(msg, 300)}
	case keyless:
		return failure{2, ReasonSignatureInvalid, truncate(msg, 300)}
	}
	return failure{2, ReasonKeyMismatch, "the signature does not verify with the authority's key"}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
