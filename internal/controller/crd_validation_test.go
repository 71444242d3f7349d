package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

const testPubKey = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZEY+P2t/kiTMjpUZmu70GDpK1Sdh
dnlnvKiy5vg1wsDtIReiUe1eBFXkOUikn+GhwKAzj6kGAB0EbDEqJ+hJcA==
-----END PUBLIC KEY-----
`

func validRegistry() *v1alpha1.Registry {
	return &v1alpha1.Registry{
		ObjectMeta: metav1.ObjectMeta{Name: "r"},
		Spec:       v1alpha1.RegistrySpec{URL: "https://registry.allowed.test"},
	}
}

func validPolicy() *v1alpha1.RepositoryPolicy {
	return &v1alpha1.RepositoryPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1alpha1.RepositoryPolicySpec{
			RegistryRef:  v1alpha1.LocalObjectReference{Name: "r"},
			Repositories: []string{"**"},
			Verification: &v1alpha1.VerificationSpec{
				Authorities: []v1alpha1.Authority{
					{Name: "k", Key: &v1alpha1.KeyAuthority{Data: testPubKey}},
					{Name: "ci", Keyless: &v1alpha1.KeylessAuthority{
						Issuer: "https://issuer.test", Subject: "ci@example.test",
						TrustedRootRef: v1alpha1.TrustedRootReference{Name: "root"},
					}},
				},
				Attestations: []v1alpha1.AttestationRequirement{
					{Name: "prov", PredicateType: "https://slsa.dev/provenance/v1", Authority: "k"},
				},
			},
			Scanning:  &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxCritical: ptr(int32(0))}},
			Retention: &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(int32(3))}}},
		},
	}
}

func validImage() *v1alpha1.ImageAttestation {
	return &v1alpha1.ImageAttestation{
		ObjectMeta: metav1.ObjectMeta{Name: "i"},
		Spec: v1alpha1.ImageAttestationSpec{
			RegistryRef: v1alpha1.LocalObjectReference{Name: "r"},
			Repository:  "team-a/app",
			Digest:      "sha256:" + strings.Repeat("ab", 32),
			Tags:        []string{"v1"},
		},
	}
}

// TestAdmissionValidation applies each OpenAPI/CEL rule's bad case and its good case to the real API
// server (dry run) and checks that only the bad case is rejected, with the rule's message.
func TestAdmissionValidation(t *testing.T) {
	ns := newNamespace(t)
	reg := func(f func(*v1alpha1.Registry)) client.Object { o := validRegistry(); f(o); return o }
	pol := func(f func(*v1alpha1.RepositoryPolicy)) client.Object { o := validPolicy(); f(o); return o }
	img := func(f func(*v1alpha1.ImageAttestation)) client.Object { o := validImage(); f(o); return o }

	cases := []struct {
		name    string
		obj     client.Object
		wantErr string // empty: must be accepted
	}{
		{"registry valid", reg(func(*v1alpha1.Registry) {}), ""},
		{"registry url without scheme", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "registry.allowed.test" }), "url must be an absolute http:// or https:// URL"},
		{"registry url ftp", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "ftp://registry.allowed.test" }), "url must be an absolute http:// or https:// URL"},
		{"registry url with path", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "https://registry.allowed.test/v2/x" }), "url must not carry a path"},
		{"registry url with query", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "https://registry.allowed.test?x=1" }), "url must not carry a path or query"},
		{"registry url with credentials", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "https://user:pw@registry.allowed.test" }), "url must not carry credentials"},
		{"registry upper-case http without insecure", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "HTTP://127.0.0.1:5000" }), "plain http:// needs insecure: true"},
		{"registry timeout too short", reg(func(r *v1alpha1.Registry) { r.Spec.Timeout = &metav1.Duration{Duration: time.Millisecond} }), "timeout must be between 1s and 1h"},
		{"registry timeout too long", reg(func(r *v1alpha1.Registry) { r.Spec.Timeout = &metav1.Duration{Duration: 2 * time.Hour} }), "timeout must be between 1s and 1h"},
		{"registry timeout 1h", reg(func(r *v1alpha1.Registry) { r.Spec.Timeout = &metav1.Duration{Duration: time.Hour} }), ""},
		{"registry timeout 1s", reg(func(r *v1alpha1.Registry) { r.Spec.Timeout = &metav1.Duration{Duration: time.Second} }), ""},
		{"registry url with port", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "https://registry.allowed.test:5443" }), ""},
		{"registry http without insecure", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "http://127.0.0.1:5000" }), "plain http:// needs insecure: true"},
		{"registry http with insecure", reg(func(r *v1alpha1.Registry) { r.Spec.URL = "http://127.0.0.1:5000"; r.Spec.Insecure = true }), ""},
		{"registry unknown provider", reg(func(r *v1alpha1.Registry) { r.Spec.Provider = "Quay" }), "Unsupported value"},
		{"registry interval too short", reg(func(r *v1alpha1.Registry) { r.Spec.Interval = &metav1.Duration{Duration: time.Second} }), "interval must be at least 30s"},
		{"registry interval too long", reg(func(r *v1alpha1.Registry) { r.Spec.Interval = &metav1.Duration{Duration: 169 * time.Hour} }), "interval must be at most 168h"},
		{"admission wait too long", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Admission = &v1alpha1.AdmissionSpec{WaitForVerdict: &metav1.Duration{Duration: 26 * time.Second}}
		}), "waitForVerdict must be between 0s and 25s"},
		{"admission wait of zero", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Admission = &v1alpha1.AdmissionSpec{WaitForVerdict: &metav1.Duration{}}
		}), "waitForVerdict must be between 0s and 25s"},
		{"registry interval a week", reg(func(r *v1alpha1.Registry) { r.Spec.Interval = &metav1.Duration{Duration: 168 * time.Hour} }), ""},
		{"registry names with include", reg(func(r *v1alpha1.Registry) {
			r.Spec.Repositories.Names = []string{"library/nginx"}
			r.Spec.Repositories.Include = []string{"**"}
		}), "names and include/exclude are mutually exclusive"},
		{"registry names only", reg(func(r *v1alpha1.Registry) { r.Spec.Repositories.Names = []string{"library/nginx"} }), ""},
		{"registry invalid repository name", reg(func(r *v1alpha1.Registry) { r.Spec.Repositories.Names = []string{"Library/NGINX"} }), "should match"},

		{"policy valid", pol(func(*v1alpha1.RepositoryPolicy) {}), ""},
		{"policy no repositories", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Repositories = nil }), "spec.repositories"},
		{"policy unknown mode", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Mode = "Block" }), "Unsupported value"},
		{"policy keepLatest zero (keeps nothing)", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.Rules[0].KeepLatest = ptr(int32(0)) }), "should be greater than or equal to 1"},
		{"policy keepLatest one", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.Rules[0].KeepLatest = ptr(int32(1)) }), ""},
		{"policy retention rule keeps nothing", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.Rules[0].KeepLatest = nil }), "a rule needs keepLatest or keepWithinDays"},
		{"policy subject and subjectRegExp", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[1].Keyless.SubjectRegExp = ".*@example.test"
		}), "exactly one of subject or subjectRegExp"},
		{"policy subjectRegExp only", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[1].Keyless.Subject = ""
			p.Spec.Verification.Authorities[1].Keyless.SubjectRegExp = ".*@example.test"
		}), ""},
		{"policy neither subject", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Verification.Authorities[1].Keyless.Subject = "" }), "exactly one of subject or subjectRegExp"},
		{"policy key and keyless", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[0].Keyless = p.Spec.Verification.Authorities[1].Keyless
		}), "exactly one of key, keyless or notation"},
		{"policy notation authority", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[1] = v1alpha1.Authority{Name: "release", Notation: &v1alpha1.NotationAuthority{
				TrustStoreRef: v1alpha1.CertificatesReference{Name: "notation-ca"}, TrustedIdentities: []string{"x509.subject:CN=release, O=Example"}}}
		}), ""},
		{"policy vex by a key authority", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Scanning.VEX = &v1alpha1.VEXSpec{Authorities: []string{"k", "ci"}}
		}), ""},
		{"policy vex by an unknown authority", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Scanning.VEX = &v1alpha1.VEXSpec{Authorities: []string{"vendor"}}
		}), "scanning.vex.authorities must name cosign authorities"},
		{"policy vex without verification", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification = nil
			p.Spec.Scanning.VEX = &v1alpha1.VEXSpec{Authorities: []string{"k"}}
		}), "scanning.vex.authorities must name cosign authorities"},
		{"policy vex by a notation authority", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[1] = v1alpha1.Authority{Name: "release", Notation: &v1alpha1.NotationAuthority{
				TrustStoreRef: v1alpha1.CertificatesReference{Name: "notation-ca"}, TrustedIdentities: []string{"*"}}}
			p.Spec.Scanning.VEX = &v1alpha1.VEXSpec{Authorities: []string{"release"}}
		}), "scanning.vex.authorities must name cosign authorities"},
		{"policy notation and key", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[0].Notation = &v1alpha1.NotationAuthority{
				TrustStoreRef: v1alpha1.CertificatesReference{Name: "notation-ca"}, TrustedIdentities: []string{"*"}}
		}), "exactly one of key, keyless or notation"},
		{"policy notation identity not x509.subject", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[1] = v1alpha1.Authority{Name: "release", Notation: &v1alpha1.NotationAuthority{
				TrustStoreRef: v1alpha1.CertificatesReference{Name: "notation-ca"}, TrustedIdentities: []string{"CN=release"}}}
		}), "each trusted identity is '*' or 'x509.subject:<distinguished name>'"},
		{"policy notation without identities", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[1] = v1alpha1.Authority{Name: "release", Notation: &v1alpha1.NotationAuthority{
				TrustStoreRef: v1alpha1.CertificatesReference{Name: "notation-ca"}}}
		}), "trustedIdentities"},
		{"policy key secretRef and data", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[0].Key.SecretRef = &v1alpha1.SecretKeyReference{Name: "s", Key: "cosign.pub"}
		}), "exactly one of secretRef or data"},
		{"policy key data not PEM", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Verification.Authorities[0].Key.Data = "ssh-ed25519 AAAA" }), "data must be a PEM public key"},
		{"policy unknown severity", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Scanning.Vulnerabilities.UnknownSeverityAs = "SEVERE" }), "Unsupported value"},
		{"policy unknown misconfiguration severity", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Scanning.Misconfigurations = &v1alpha1.MisconfigurationThreshold{MaxSeverity: "high"}
		}), "Unsupported value"},
		{"policy require above authorities", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Verification.Require = ptr(int32(3)) }), "require must not exceed"},
		{"policy rescanInterval too short", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Scanning.RescanInterval = &metav1.Duration{Duration: time.Second}
		}), "rescanInterval must be at least 1m"},
		{"policy rescanInterval 1m", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Scanning.RescanInterval = &metav1.Duration{Duration: time.Minute}
		}), ""},
		{"policy empty subject", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[1].Keyless.Subject = ""
			p.Spec.Verification.Authorities[1].Keyless.SubjectRegExp = ""
		}), "exactly one of subject or subjectRegExp"},
		{"policy key secretRef only", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Verification.Authorities[0].Key = &v1alpha1.KeyAuthority{SecretRef: &v1alpha1.SecretKeyReference{Name: "s", Key: "cosign.pub"}}
		}), ""},
		{"policy member user only", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Access = &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleDeveloper}}}
		}), ""},
		{"policy member empty user", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Access = &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{Group: "", User: "", Role: v1alpha1.RoleDeveloper}}}
		}), "exactly one of user or group"},
		{"policy robot rotate 1h", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Access = &v1alpha1.AccessSpec{Robots: []v1alpha1.Robot{{Name: "ci", Permissions: []string{"repository:pull"}, SecretName: "s",
				RotateEvery: &metav1.Duration{Duration: time.Hour}}}}
		}), ""},
		{"policy keepWithinDays only", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Retention.Rules[0] = v1alpha1.RetentionRule{KeepWithinDays: ptr(int32(30))}
		}), ""},
		{"policy require one", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Verification.Require = ptr(int32(1)) }), ""},
		{"policy attestation unknown authority", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Verification.Attestations[0].Authority = "nobody" }), "every attestation must name one of the authorities"},
		{"policy duplicate authority names", pol(func(p *v1alpha1.RepositoryPolicy) { p.Spec.Verification.Authorities[1].Name = "k" }), "Duplicate value"},
		{"policy member user and group", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Access = &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "a", Group: "b", Role: v1alpha1.RoleGuest}}}
		}), "exactly one of user or group"},
		{"policy robot bad permission", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Access = &v1alpha1.AccessSpec{Robots: []v1alpha1.Robot{{Name: "ci", Permissions: []string{"pull"}, SecretName: "s"}}}
		}), "should match"},
		{"policy robot rotate too often", pol(func(p *v1alpha1.RepositoryPolicy) {
			p.Spec.Access = &v1alpha1.AccessSpec{Robots: []v1alpha1.Robot{{Name: "ci", Permissions: []string{"repository:pull"}, SecretName: "s",
				RotateEvery: &metav1.Duration{Duration: time.Minute}}}}
		}), "rotateEvery must be at least 1h"},
		{"policy too many retention rules", pol(func(p *v1alpha1.RepositoryPolicy) {
			for range 15 {
				p.Spec.Retention.Rules = append(p.Spec.Retention.Rules, v1alpha1.RetentionRule{KeepWithinDays: ptr(int32(7))})
			}
		}), "must have at most 15 items"},

		{"image valid", img(func(*v1alpha1.ImageAttestation) {}), ""},
		{"image bad digest", img(func(i *v1alpha1.ImageAttestation) { i.Spec.Digest = "sha256:XYZ" }), "spec.digest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.obj.SetNamespace(ns)
			err := k8sClient.Create(context.Background(), tc.obj, client.DryRunAll)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("valid object rejected: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("invalid object accepted; want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !apierrors.IsInvalid(err):
				t.Fatalf("want an Invalid error, got %v", err)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestImageIdentityImmutable checks that an ImageAttestation's digest, repository and Registry cannot
// change after creation, while its tags can.
func TestImageIdentityImmutable(t *testing.T) {
	ctx := context.Background()
	obj := validImage()
	obj.Namespace = newNamespace(t)
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		want   string // empty: accepted
		mutate func(*v1alpha1.ImageAttestation)
	}{
		{"digest is immutable", func(i *v1alpha1.ImageAttestation) { i.Spec.Digest = "sha256:" + strings.Repeat("cd", 32) }},
		{"registryRef and repository are immutable", func(i *v1alpha1.ImageAttestation) { i.Spec.Repository = "team-b/other" }},
		{"registryRef and repository are immutable", func(i *v1alpha1.ImageAttestation) { i.Spec.RegistryRef.Name = "other" }},
		{"", func(i *v1alpha1.ImageAttestation) { i.Spec.Tags = []string{"v1", "v2"} }},
	} {
		changed := obj.DeepCopy()
		tc.mutate(changed)
		err := k8sClient.Patch(ctx, changed, client.MergeFrom(obj), client.DryRunAll)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("changing tags rejected: %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("want %q, got %v", tc.want, err)
		}
	}
}

// TestDefaults checks the CRD defaults a user relies on: Generic provider, 10m interval, 5m timeout,
// Audit mode, retention dry-run with in-use protection and 10 deletions per pass, Either index policy.
func TestDefaults(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: "https://r.allowed.test"}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "d"}, Repositories: []string{"**"},
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "k", Key: &v1alpha1.KeyAuthority{Data: testPubKey}}}},
		Scanning:     &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{}, Secrets: &v1alpha1.SecretThreshold{}, Misconfigurations: &v1alpha1.MisconfigurationThreshold{}},
		Retention:    &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(int32(1))}}},
	}}
	for _, o := range []client.Object{reg, pol} {
		if err := k8sClient.Create(ctx, o, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
	}
	if reg.Spec.Provider != v1alpha1.ProviderGeneric || reg.Spec.Interval.Duration != 10*time.Minute || reg.Spec.Timeout.Duration != 5*time.Minute {
		t.Errorf("Registry defaults: %+v", reg.Spec)
	}
	r := pol.Spec.Retention
	if pol.Spec.Mode != v1alpha1.ModeAudit || !*r.DryRun || !*r.ProtectInUse || r.MaxDeletionsPerPass != nil ||
		pol.Spec.Verification.IndexPolicy != v1alpha1.IndexPolicyEither || pol.Spec.Scanning.RescanInterval.Duration != 24*time.Hour ||
		pol.Spec.Scanning.Vulnerabilities.UnknownSeverityAs != v1alpha1.SeverityUnknown || *pol.Spec.Scanning.Secrets.Maximum != 0 ||
		pol.Spec.Scanning.Misconfigurations.MaxSeverity != v1alpha1.SeverityLow {
		t.Errorf("RepositoryPolicy defaults: %+v %+v %+v", pol.Spec, *r, *pol.Spec.Scanning)
	}
}
