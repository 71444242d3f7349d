package verify

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/notaryproject/notation-core-go/revocation"
	revocationresult "github.com/notaryproject/notation-core-go/revocation/result"
	notationsig "github.com/notaryproject/notation-core-go/signature"
	"github.com/notaryproject/notation-go"
	notationverifier "github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Notary Project signatures (https://github.com/notaryproject/specifications, signature-specification.md):
// an OCI image manifest with artifact type NotationArtifactType whose subject is the signed manifest
// and whose one layer is the signature envelope (JWS or COSE). notation-go verifies the envelope; we
// only find and fetch it, through the Registry's transport like every other request.
const (
	// NotationArtifactType is the artifact type of a Notary Project signature manifest.
	NotationArtifactType = "application/vnd.cncf.notary.signature"
	// maxNotationEnvelopeBytes bounds an envelope read from a registry (a JWS with a three-certificate
	// chain is a few KiB).
	maxNotationEnvelopeBytes = 256 << 10
)

// Reasons for notation authorities, beside ReasonSignatureMissing, ReasonSignatureInvalid,
// ReasonCertificateUntrusted, ReasonIdentityMismatch, ReasonCertificateExpired and
// ReasonDigestMismatch.
const (
	// ReasonSignatureExpired: the Notary Project signature's own expiry (`notation sign --expiry`) passed.
	ReasonSignatureExpired = "SignatureExpired"
)

// notationEnvelopeTypes are the envelope media types notation-go verifies.
var notationEnvelopeTypes = []string{"application/jose+json", "application/cose"}

// foundNotation is one Notary Project signature envelope read from a referrer of the digest.
type foundNotation struct {
	manifest, mediaType string
	envelope            []byte
	problem             string // why it cannot be used (too large, no envelope layer); empty when it can
}

// notationCheck is a notation authority compiled: notation-go's verifier with a trust policy that
// holds only this authority's trust store and identities.
type notationCheck struct {
	verifier notation.Verifier
}

// compileNotation builds the verifier of a notation authority from its PEM trust store.
func compileNotation(authority string, identities []string, trustStorePEM []byte) (*notationCheck, error) {
	certs, err := ParseCertificates(trustStorePEM)
	if err != nil {
		return nil, err
	}
	store := "portcullis" // the named store of type ca, in this authority's own trust store
	doc := &trustpolicy.Document{Version: "1.0", TrustPolicies: []trustpolicy.TrustPolicy{{
		Name: authority, RegistryScopes: []string{"*"},
		SignatureVerification: trustpolicy.SignatureVerification{VerificationLevel: trustpolicy.LevelStrict.Name,
			Override: map[trustpolicy.ValidationType]trustpolicy.ValidationAction{trustpolicy.TypeRevocation: trustpolicy.ActionSkip}},
		TrustStores:       []string{string(truststore.TypeCA) + ":" + store},
		TrustedIdentities: identities,
	}}}
	off := offlineRevocation{}
	v, err := notationverifier.NewWithOptions(doc, memoryTrustStore{truststore.TypeCA: certs}, nil,
		notationverifier.VerifierOptions{RevocationCodeSigningValidator: off, RevocationTimestampingValidator: off})
	if err != nil {
		return nil, fmt.Errorf("notation trust policy: %w", err)
	}
	return &notationCheck{verifier: v}, nil
}

// ParseCertificates reads every PEM CERTIFICATE block of data; it fails when there is none or one
// does not parse.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing a trust store certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE in the trust store")
	}
	return certs, nil
}

// memoryTrustStore is a Notary Project X.509 trust store held in memory, by store type (the named
// store is always ours).
type memoryTrustStore map[truststore.Type][]*x509.Certificate

func (m memoryTrustStore) GetCertificates(_ context.Context, t truststore.Type, _ string) ([]*x509.Certificate, error) {
	certs, ok := m[t]
	if !ok {
		return nil, fmt.Errorf("no trust store of type %s", t)
	}
	return certs, nil
}

// offlineRevocation answers every revocation check with "cannot be checked" without a network
// request (the trust policy skips revocation for signing certificates; timestamping chains are
// otherwise checked online by notation-go).
type offlineRevocation struct{}

func (offlineRevocation) ValidateContext(_ context.Context, o revocation.ValidateContextOptions) ([]*revocationresult.CertRevocationResult, error) {
	out := make([]*revocationresult.CertRevocationResult, len(o.CertChain))
	for i := range out {
		out[i] = &revocationresult.CertRevocationResult{Result: revocationresult.ResultNonRevokable}
	}
	return out, nil
}

// readNotation fetches a Notary Project signature manifest and its envelope (bounded).
func (v *Verifier) readNotation(ref name.Digest, ropts []remote.Option) (foundNotation, error) {
	out := foundNotation{manifest: ref.DigestStr()}
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return out, fmt.Errorf("%w: reading notation signature %s: %w", ErrRegistry, ref.DigestStr(), err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil || len(m.Layers) != 1 || !slices.Contains(notationEnvelopeTypes, string(m.Layers[0].MediaType)) {
		out.problem = "the signature manifest does not hold exactly one JWS or COSE envelope layer"
		return out, nil
	}
	layer := m.Layers[0]
	if layer.Size > maxNotationEnvelopeBytes {
		out.problem = fmt.Sprintf("the envelope is %d bytes, over the %d-byte limit", layer.Size, maxNotationEnvelopeBytes)
		return out, nil
	}
	l, err := remote.Layer(ref.Context().Digest(layer.Digest.String()), ropts...)
	if err != nil {
		return out, fmt.Errorf("%w: reading notation envelope %s: %w", ErrRegistry, layer.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return out, fmt.Errorf("%w: reading notation envelope %s: %w", ErrRegistry, layer.Digest, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxNotationEnvelopeBytes+1))
	if err != nil {
		return out, fmt.Errorf("%w: reading notation envelope %s: %w", ErrRegistry, layer.Digest, err)
	}
	out.mediaType, out.envelope = string(layer.MediaType), data
	return out, nil
}

// check verifies the notation signatures of the digest whose manifest descriptor is target (the
// envelope signs mediaType, digest and size) against the authority.
func (n *notationCheck) check(ctx context.Context, authority string, sigs []foundNotation, ref name.Digest, target ocispec.Descriptor) AuthorityResult {
	r := AuthorityResult{Name: authority}
	if len(sigs) == 0 {
		r.Reason, r.Message = ReasonSignatureMissing, "no Notary Project signature found for the digest (no referrer of artifact type "+NotationArtifactType+")"
		return r
	}
	best := failure{rank: -1}
	for _, s := range sigs {
		if s.problem != "" {
			best = best.worse(failure{0, ReasonSignatureInvalid, "a Notary Project signature cannot be used: " + s.problem})
			continue
		}
		outcome, err := n.verifier.Verify(ctx, target, s.envelope, notation.VerifierVerifyOptions{
			ArtifactReference: ref.String(), SignatureMediaType: s.mediaType})
		if err != nil {
			best = best.worse(classifyNotation(outcome, err))
			continue
		}
		r.Verified = true
		r.Signer = "notation"
		if outcome != nil && outcome.EnvelopeContent != nil && len(outcome.EnvelopeContent.SignerInfo.CertificateChain) > 0 {
			r.Signer = outcome.EnvelopeContent.SignerInfo.CertificateChain[0].Subject.String()
		}
		return r
	}
	r.Reason, r.Message = best.reason, fmt.Sprintf("%d Notary Project signature(s) found, none verifies: %s", len(sigs), best.message)
	return r
}

// classifyNotation names the check of a notation-go verification outcome that failed. Ranks follow
// classifyFailure: the more of the signature holds, the more telling the reason.
func classifyNotation(outcome *notation.VerificationOutcome, err error) failure {
	msg := err.Error()
	if outcome == nil {
		return failure{0, ReasonSignatureInvalid, msg}
	}
	for _, res := range outcome.VerificationResults {
		if res == nil || res.Error == nil {
			continue
		}
		switch res.Type {
		case trustpolicy.TypeIntegrity:
			return failure{1, ReasonSignatureInvalid, "the envelope's signature does not verify: " + msg}
		case trustpolicy.TypeAuthenticity:
			var authErr *notationsig.SignatureAuthenticityError
			var inconclusive notation.ErrorVerificationInconclusive
			if errors.As(res.Error, &authErr) || errors.As(res.Error, &inconclusive) {
				return failure{2, ReasonCertificateUntrusted, "the signing certificate chain does not end in the trust store: " + msg}
			}
			return failure{3, ReasonIdentityMismatch, "the signing certificate is not one of trustedIdentities: " + msg}
		case trustpolicy.TypeExpiry:
			return failure{4, ReasonSignatureExpired, msg}
		case trustpolicy.TypeAuthenticTimestamp:
			return failure{4, ReasonCertificateExpired, "the signing certificate was not valid when checked: " + msg}
		}
	}
	if strings.Contains(msg, "content descriptor mismatch") { // every check passed: it signs another manifest
		return failure{4, ReasonDigestMismatch, "the signature is valid but signs another manifest (digest, size or media type)"}
	}
	return failure{0, ReasonSignatureInvalid, msg}
}

// describe reads the digest's manifest descriptor (media type and size) with one HEAD: a Notary
// Project signature signs all three.
func (v *Verifier) describe(ctx context.Context, digest name.Digest) (*ocispec.Descriptor, error) {
	d, err := remote.Head(digest, append([]remote.Option{remote.WithContext(ctx)}, v.remoteOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: describing %s: %w", ErrRegistry, digest, err)
	}
	return &ocispec.Descriptor{MediaType: string(d.MediaType), Digest: godigest.Digest(d.Digest.String()), Size: d.Size}, nil
}
