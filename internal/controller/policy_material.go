package controller

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/verify"
)

// readMaterial reads, from the policy's namespace only, what each authority verifies with: the PEM
// public key (key.data or the referenced Secret key) and a key authority's optional trusted root
// (under verify.KeyTrustedRoot), a keyless authority's trusted_root.json, or a notation authority's
// PEM trust store (ConfigMap or Secret).
// A missing object or a key that does not parse stalls; an API error is transient.
func readMaterial(ctx context.Context, c client.Reader, ns string, spec *v1alpha1.VerificationSpec) (verify.Material, outcome, bool, error) {
	m := verify.Material{}
	for _, a := range spec.Authorities {
		switch {
		case a.Key != nil && a.Key.SecretRef != nil:
			ref := a.Key.SecretRef
			s, o, ok, err := getSecret(ctx, c, ns, ref.Name)
			if !ok || err != nil {
				return nil, o, ok, err
			}
			if err := parsePublicKey(s.Data[ref.Key]); err != nil {
				return nil, stalled(v1alpha1.SecretInvalidReason, "authority %q: Secret %q key %q: %v", a.Name, ref.Name, ref.Key, err), false, nil
			}
			m[a.Name] = s.Data[ref.Key]
		case a.Key != nil:
			if err := parsePublicKey([]byte(a.Key.Data)); err != nil {
				return nil, stalled(v1alpha1.InvalidSpecReason, "authority %q: key.data: %v", a.Name, err), false, nil
			}
			m[a.Name] = []byte(a.Key.Data)
		case a.Keyless != nil:
			data, o, ok, err := readTrustedRoot(ctx, c, ns, a.Keyless.TrustedRootRef)
			if !ok || err != nil {
				return nil, o, ok, err
			}
			m[a.Name] = data
		case a.Notation != nil:
			ref := a.Notation.TrustStoreRef
			key := ref.Key
			if key == "" {
				key = "ca.crt"
			}
			data, o, ok, err := readTrustedRoot(ctx, c, ns, v1alpha1.TrustedRootReference{Kind: ref.Kind, Name: ref.Name, Key: key})
			if !ok || err != nil {
				return nil, o, ok, err
			}
			if _, err := verify.ParseCertificates(data); err != nil {
				return nil, stalled(v1alpha1.InvalidSpecReason, "authority %q: %s %q key %q: %v", a.Name, certificatesKind(ref), ref.Name, key, err), false, nil
			}
			m[a.Name] = data
		}
		if a.Key != nil && a.Key.TrustedRootRef != nil {
			data, o, ok, err := readTrustedRoot(ctx, c, ns, *a.Key.TrustedRootRef)
			if !ok || err != nil {
				return nil, o, ok, err
			}
			m[verify.KeyTrustedRoot(a.Name)] = data
		}
	}
	return m, outcome{}, true, nil
}

// certificatesKind is the reference's kind with the API default applied.
func certificatesKind(r v1alpha1.CertificatesReference) string {
	if r.Kind == "" {
		return "ConfigMap"
	}
	return r.Kind
}

// readTrustedRoot reads the trusted root JSON (or another key) from its ConfigMap or Secret.
func readTrustedRoot(ctx context.Context, c client.Reader, ns string, ref v1alpha1.TrustedRootReference) ([]byte, outcome, bool, error) {
	key := ref.Key
	if key == "" {
		key = "trusted_root.json"
	}
	if trustedRootKind(ref) == "Secret" {
		s, o, ok, err := getSecret(ctx, c, ns, ref.Name)
		if !ok || err != nil {
			return nil, o, ok, err
		}
		return s.Data[key], outcome{}, true, nil
	}
	cm := &corev1.ConfigMap{}
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, cm)
	switch {
	case apierrors.IsNotFound(err):
		return nil, stalled(v1alpha1.ConfigMapNotFoundReason, "ConfigMap %q not found in namespace %q", ref.Name, ns), false, nil
	case err != nil:
		return nil, failed(v1alpha1.ReadFailedReason, fmt.Errorf("reading ConfigMap %q: %w", ref.Name, err)), false, err
	}
	return []byte(cm.Data[key]), outcome{}, true, nil
}

// parsePublicKey accepts one PEM "PUBLIC KEY" block (PKIX: ECDSA, RSA or Ed25519), as written by
// `cosign generate-key-pair` into cosign.pub.
func parsePublicKey(data []byte) error {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return fmt.Errorf("no PEM PUBLIC KEY block")
	}
	if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		return fmt.Errorf("parsing public key: %w", err)
	}
	return nil
}

// materialHash identifies the material, so that a rotated key or root gives a new compiled verifier
// and new results.
func materialHash(m verify.Material) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(m[n]))
		h.Write(m[n])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// specHash is a short hash of a spec section's JSON form: the cache key of what was computed from it.
func specHash(v any) string {
	b, err := json.Marshal(v)
	if err != nil { // types of our API always marshal; a failure only disables the cache hit
		return fmt.Sprintf("unhashable-%p", v)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
