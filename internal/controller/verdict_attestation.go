package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sigstore/sigstore/pkg/signature"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/vsa"
)

// Reasons for verdict attestations.
const (
	verdictAttestationFailedReason = "VerdictAttestationFailed"
	defaultPasswordKey             = "cosign.password"
)

// readVerdictSigner reads the policy's signing key from its Secret (uncached) and loads it. A
// missing Secret or key, or a key that does not load, stalls the policy with the reason; the
// message never holds key material.
func readVerdictSigner(ctx context.Context, c client.Reader, ns string, va *v1alpha1.VerdictAttestationSpec) (signature.SignerVerifier, outcome, bool, error) {
	ref := va.KeySecretRef
	s, o, ok, err := getSecret(ctx, c, ns, ref.Name)
	if !ok || err != nil {
		return nil, o, ok, err
	}
	key, found := s.Data[ref.Key]
	if !found {
		return nil, stalled(v1alpha1.SecretInvalidReason, "spec.verdictAttestation: Secret %q has no key %q", ref.Name, ref.Key), false, nil
	}
	pk := va.PasswordKey
	if pk == "" {
		pk = defaultPasswordKey
	}
	sv, err := vsa.LoadSigner(key, s.Data[pk])
	if err != nil {
		return nil, stalled(v1alpha1.SecretInvalidReason, "spec.verdictAttestation: Secret %q key %q: %v", ref.Name, ref.Key, err), false, nil
	}
	return sv, outcome{}, true, nil
}

// verdictSigners caches loaded signing keys by policy and Secret resourceVersion, so a signer is
// read and parsed once per key version, not once per image.
type verdictSigners struct {
	mu sync.Mutex
	m  map[string]signature.SignerVerifier // "<ns>/<policy>/<secret>@<resourceVersion>"
}

func (s *verdictSigners) get(ctx context.Context, c client.Reader, api client.Reader, p *v1alpha1.RepositoryPolicy) (signature.SignerVerifier, error) {
	va := p.Spec.VerdictAttestation
	rv, err := secretVersion(ctx, c, types.NamespacedName{Namespace: p.Namespace, Name: va.KeySecretRef.Name})
	if err != nil {
		return nil, fmt.Errorf("the verdict signing key Secret %q: %w", va.KeySecretRef.Name, err)
	}
	key := p.Namespace + "/" + p.Name + "/" + va.KeySecretRef.Name + "@" + rv + "/" + va.KeySecretRef.Key + "/" + va.PasswordKey
	s.mu.Lock()
	sv, ok := s.m[key]
	s.mu.Unlock()
	if ok {
		return sv, nil
	}
	sv, o, ok, err := readVerdictSigner(ctx, api, p.Namespace, va)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s", o.message)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil || len(s.m) > 256 {
		s.m = map[string]signature.SignerVerifier{} // keys of old versions go
	}
	s.m[key] = sv
	return sv, nil
}

// verdictFingerprint identifies a verdict for re-push decisions: the digest, the policy and its
// generation, the outcome and the reasons.
func verdictFingerprint(digest string, r v1alpha1.PolicyResult) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d\x00%t\x00%s", digest, r.Name, r.ObservedGeneration, r.Compliant, strings.Join(r.Reasons, ","))))
	return hex.EncodeToString(h[:16])
}

// attestVerdicts pushes, for each policy with spec.verdictAttestation, its verdict on ia when it
// changed since the last push (status.policies[].attested, carried over from before). A failure is
// an event and a metric, never a change of the verdict; the next pass tries again.
func (r *ImageAttestationReconciler) attestVerdicts(ctx context.Context, ia *v1alpha1.ImageAttestation, reg *v1alpha1.Registry,
	rc *registry.Client, policies []v1alpha1.RepositoryPolicy, attested map[string]string) {
	byName := map[string]*v1alpha1.RepositoryPolicy{}
	for i := range policies {
		byName[policies[i].Name] = &policies[i]
	}
	for i := range ia.Status.Policies {
		res := &ia.Status.Policies[i]
		p := byName[res.Name]
		if p == nil || p.Spec.VerdictAttestation == nil || res.ObservedGeneration != p.Generation {
			continue
		}
		fp := verdictFingerprint(ia.Spec.Digest, *res)
		if attested[res.Name] == fp {
			res.Attested = fp
			continue
		}
		res.Attested = attested[res.Name] // until this push succeeds
		if err := r.pushVerdict(ctx, ia, reg, rc, p, *res); err != nil {
			verdictAttestations.WithLabelValues("failed").Inc()
			if r.Recorder != nil {
				r.Recorder.Eventf(ia, nil, corev1.EventTypeWarning, verdictAttestationFailedReason, "Attest",
					"pushing the verdict of RepositoryPolicy %s as an attestation failed (the verdict stands; retried at the next pass): %s", p.Name, truncate(err.Error(), 512))
			}
			ctrl.LoggerFrom(ctx).Error(err, "pushing a verdict attestation", "policy", p.Name)
			continue
		}
		verdictAttestations.WithLabelValues("pushed").Inc()
		res.Attested = fp
	}
}

func (r *ImageAttestationReconciler) pushVerdict(ctx context.Context, ia *v1alpha1.ImageAttestation, reg *v1alpha1.Registry, rc *registry.Client,
	p *v1alpha1.RepositoryPolicy, res v1alpha1.PolicyResult) error {
	sv, err := r.signers.get(ctx, r.Client, r.APIReader, p)
	if err != nil {
		return err
	}
	ref, err := digestRef(reg, ia)
	if err != nil {
		return err
	}
	v := vsa.Verdict{Image: ref, Policy: p.Namespace + "/" + p.Name, Generation: p.Generation, Passed: res.Compliant, Reasons: res.Reasons,
		VerifierID: p.Spec.VerdictAttestation.VerifierID, Time: time.Now()}
	if err := vsa.Push(ctx, v, sv, rc.RemoteOptions()...); err != nil {
		rc.Forget(err)
		return registry.Sanitize("pushing the verdict attestation of "+ref.String(), err)
	}
	return nil
}
