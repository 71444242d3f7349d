package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

func policyStalled(reason string) func(*v1alpha1.RepositoryPolicy) bool {
	return func(p *v1alpha1.RepositoryPolicy) bool {
		return hasCondition(p, v1alpha1.StalledCondition, metav1.ConditionTrue, reason) && p.Status.ObservedGeneration == p.Generation
	}
}

func policyReady(p *v1alpha1.RepositoryPolicy) bool {
	return hasCondition(p, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason) && p.Status.ObservedGeneration == p.Generation
}

// TestPolicyRegistryAppearsLater applies a policy before its Registry, as GitOps tools may: the policy
// is Stalled (RegistryNotFound) and becomes Ready when the Registry is created, with no retry loop.
func TestPolicyRegistryAppearsLater(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	pol := validPolicy()
	pol.Namespace = ns
	pol.Spec.Verification.Authorities = pol.Spec.Verification.Authorities[:1] // key only: no trusted root needed
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pol, "Stalled RegistryNotFound", policyStalled(v1alpha1.RegistryNotFoundReason))
	if res := kstatusOf(t, pol); res.Status != status.FailedStatus {
		t.Fatalf("kstatus %s, want Failed", res.Status)
	}

	reg := validRegistry()
	reg.Namespace = ns
	if err := k8sClient.Create(ctx, reg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pol, "Ready", policyReady)
	if res := kstatusOf(t, pol); res.Status != status.CurrentStatus {
		t.Fatalf("kstatus %s (%s), want Current", res.Status, res.Message)
	}
}

// TestPolicyReferencesStall covers key Secrets and trusted roots that are missing or unusable, and a
// subject regular expression that does not compile; each fix through the referenced object alone
// makes the policy Ready.
func TestPolicyReferencesStall(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	reg := validRegistry()
	reg.Namespace = ns
	if err := k8sClient.Create(ctx, reg); err != nil {
		t.Fatal(err)
	}

	t.Run("key secret", func(t *testing.T) {
		pol := validPolicy()
		pol.Name, pol.Namespace = "key-secret", ns
		pol.Spec.Verification.Authorities = []v1alpha1.Authority{{Name: "k", Key: &v1alpha1.KeyAuthority{
			SecretRef: &v1alpha1.SecretKeyReference{Name: "cosign", Key: "cosign.pub"}}}}
		if err := k8sClient.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled SecretNotFound", policyStalled(v1alpha1.SecretNotFoundReason))
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cosign", Namespace: ns},
			StringData: map[string]string{"cosign.pub": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}}
		if err := k8sClient.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled SecretInvalid", policyStalled(v1alpha1.SecretInvalidReason))
		s.StringData = map[string]string{"cosign.pub": testPubKey}
		if err := k8sClient.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Ready", policyReady)
		// Validation is skipped only while the policy and its Secret are unchanged: breaking the
		// Secret after a successful validation is noticed.
		s.StringData = map[string]string{"cosign.pub": "not a key"}
		if err := k8sClient.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled SecretInvalid again", policyStalled(v1alpha1.SecretInvalidReason))
	})

	t.Run("trusted root", func(t *testing.T) {
		pol := validPolicy()
		pol.Name, pol.Namespace = "trusted-root", ns
		pol.Spec.Verification.Authorities = pol.Spec.Verification.Authorities[1:]
		pol.Spec.Verification.Attestations = nil
		if err := k8sClient.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled ConfigMapNotFound", policyStalled(v1alpha1.ConfigMapNotFoundReason))
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns},
			Data: map[string]string{"trusted_root.json": "not json"}}
		if err := k8sClient.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled InvalidSpec", policyStalled(v1alpha1.InvalidSpecReason))
		cm.Data = map[string]string{"trusted_root.json": `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`}
		if err := k8sClient.Update(ctx, cm); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Ready", policyReady)
	})

	t.Run("key with a trusted root", func(t *testing.T) {
		pol := validPolicy()
		pol.Name, pol.Namespace = "key-logs", ns
		pol.Spec.Verification.Authorities = []v1alpha1.Authority{{Name: "k", Key: &v1alpha1.KeyAuthority{Data: testPubKey,
			TrustedRootRef: &v1alpha1.TrustedRootReference{Name: "key-logs"}}}}
		pol.Spec.Verification.Attestations = nil
		if err := k8sClient.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled ConfigMapNotFound", policyStalled(v1alpha1.ConfigMapNotFoundReason))
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "key-logs", Namespace: ns},
			Data: map[string]string{"trusted_root.json": `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`}}
		if err := k8sClient.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled InvalidSpec (no log)", policyStalled(v1alpha1.InvalidSpecReason))
		if c := findCondition(pol, v1alpha1.StalledCondition); !containsAll(c.Message, "no transparency log") {
			t.Fatalf("message: %q", c.Message)
		}
		cm.Data = map[string]string{"trusted_root.json": string(logRootJSON(t))}
		if err := k8sClient.Update(ctx, cm); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Ready", policyReady)
	})

	t.Run("notation trust store", func(t *testing.T) {
		pol := validPolicy()
		pol.Name, pol.Namespace = "notation", ns
		pol.Spec.Verification.Authorities = []v1alpha1.Authority{{Name: "release", Notation: &v1alpha1.NotationAuthority{
			TrustStoreRef:     v1alpha1.CertificatesReference{Kind: "Secret", Name: "notation-ca"},
			TrustedIdentities: []string{"x509.subject:CN=release"}}}}
		pol.Spec.Verification.Attestations = nil
		if err := k8sClient.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled SecretNotFound", policyStalled(v1alpha1.SecretNotFoundReason))
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "notation-ca", Namespace: ns},
			StringData: map[string]string{"ca.crt": "not a certificate"}}
		if err := k8sClient.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled InvalidSpec (no certificate)", policyStalled(v1alpha1.InvalidSpecReason))
		if c := findCondition(pol, v1alpha1.StalledCondition); !containsAll(c.Message, "no PEM CERTIFICATE") {
			t.Fatalf("message: %q", c.Message)
		}
		s.StringData = map[string]string{"ca.crt": string(verifytest.NewNotationCA(t, "root").PEM)}
		if err := k8sClient.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		// The Notary Project requires C, ST and O in an x509.subject identity.
		waitFor(t, pol, "Stalled InvalidSpec (identity)", func(p *v1alpha1.RepositoryPolicy) bool {
			c := findCondition(p, v1alpha1.StalledCondition)
			return c != nil && c.Status == metav1.ConditionTrue && containsAll(c.Message, "x509.subject:CN=release")
		})
		patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[0].Notation.TrustedIdentities = []string{"x509.subject:C=US, ST=WA, O=Example, CN=release"}
		})
		waitFor(t, pol, "Ready", policyReady)
	})

	t.Run("invalid pattern", func(t *testing.T) {
		pol := validPolicy()
		pol.Name, pol.Namespace = "pattern", ns
		pol.Spec.Verification = nil
		pol.Spec.Tags.Exclude = []string{"v[1-"}
		if err := k8sClient.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled InvalidSpec", policyStalled(v1alpha1.InvalidSpecReason))
		if c := findCondition(pol, v1alpha1.StalledCondition); !containsAll(c.Message, "v[1-") {
			t.Fatalf("message does not name the pattern: %q", c.Message)
		}
		patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Tags.Exclude = []string{"v[1-9]*"} })
		waitFor(t, pol, "Ready", policyReady)
	})

	t.Run("attestation condition", func(t *testing.T) {
		pol := validPolicy()
		pol.Name, pol.Namespace = "cel", ns
		pol.Spec.Verification.Authorities = pol.Spec.Verification.Authorities[:1]
		pol.Spec.Verification.Attestations[0].Condition = "predicate.buildType =="
		if err := k8sClient.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled InvalidSpec", policyStalled(v1alpha1.InvalidSpecReason))
		if c := findCondition(pol, v1alpha1.StalledCondition); !containsAll(c.Message, `attestation "prov"`, "predicate.buildType ==") {
			t.Fatalf("the message must name the attestation and its condition: %q", c.Message)
		}
		patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Attestations[0].Condition = `predicate.buildType == "https://example.test/v1"`
		})
		waitFor(t, pol, "Ready", policyReady)
	})

	t.Run("subject regexp", func(t *testing.T) {
		pol := validPolicy()
		pol.Name, pol.Namespace = "regexp", ns
		pol.Spec.Verification.Authorities = pol.Spec.Verification.Authorities[1:]
		pol.Spec.Verification.Attestations = nil
		pol.Spec.Verification.Authorities[0].Keyless.Subject = ""
		pol.Spec.Verification.Authorities[0].Keyless.SubjectRegExp = "^(ci@"
		if err := k8sClient.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		waitFor(t, pol, "Stalled InvalidSpec", policyStalled(v1alpha1.InvalidSpecReason))
		patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[0].Keyless.SubjectRegExp = "^ci@.*$"
		})
		waitFor(t, pol, "Ready", policyReady)
	})
}

// logRootJSON is a trusted_root.json with one transparency log (a fresh key) and nothing else.
func logRootJSON(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return verifytest.TrustedRootJSON(t, nil, nil, verifytest.TransparencyLog(t, &key.PublicKey))
}
