package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/controller"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
	"github.com/portcullis-dev/portcullis/internal/olm"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/scan/vulndb"
)

const (
	installNS = "portcullis-system"
	managerSA = "portcullis-controller-manager"
)

// TestInstall installs Portcullis the way a platform team does and runs it with exactly the rights
// that install grants:
//
//  1. The previous committed CRDs are installed and the samples stored under them.
//  2. `kustomize build config/default` is applied with server-side apply and strict field validation
//     (CRDs, Namespace, RBAC, Deployment, metrics Service): the CRD upgrade and every object must be
//     accepted, and the samples must still apply strictly.
//  3. config/prometheus is applied against the Prometheus Operator's real ServiceMonitor CRD.
//  4. The manager binary runs with the Deployment's own arguments, impersonating the ServiceAccount
//     config/default creates, against a real registry, with the trivy-operator report export on:
//     images are judged, an image leaving the policy is deleted, metrics are scraped over https with
//     TokenReview/SubjectAccessReview, a policy writes to a (fake, swagger-checked) Harbor (a robot
//     Secret created, rotated and deleted; the cleanup finalizer added), and SIGTERM releases the
//     leader Lease.
//  5. The API server's audit log must show no request of the manager refused, and every permission
//     config/default grants used at least once (those a short run cannot reach are listed with why).
func TestInstall(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	manager := buildManager(t)
	auditLog := filepath.Join(dir, "audit.log")
	cfg, adminKubeconfig := startControlPlaneWithAudit(t, dir, auditLog)
	c := newClient(t, cfg)
	cs := kubernetes.NewForConfigOrDie(cfg)

	// 1. The previous CRDs, with the samples stored under them.
	prevRev, prevCRDs := previousCRDs(t)
	for _, crd := range prevCRDs {
		apply(t, c, crd, false)
	}
	waitEstablished(t, c, prevCRDs)
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}})
	samples, err := olm.Kustomize(filepath.Join("..", "..", "config", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		s.SetNamespace("team-a")
		apply(t, c, s, false) // as the previous schema accepts them (unknown fields dropped)
	}
	t.Logf("stored %d samples under the CRDs of %s", len(samples), prevRev)

	// 2. The install itself, with cert-manager's CRDs (the webhook's certificate).
	certManager := append(readObjects(t, filepath.Join("testdata", "cert-manager.io_certificates.yaml")),
		readObjects(t, filepath.Join("testdata", "cert-manager.io_issuers.yaml"))...)
	for _, crd := range certManager {
		apply(t, c, crd, false)
	}
	waitEstablished(t, c, certManager)
	objs, err := olm.Kustomize(filepath.Join("..", "..", "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	var crds []*unstructured.Unstructured
	for _, o := range objs {
		kinds[o.GetKind()]++
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o)
		}
		apply(t, c, o, true)
	}
	for _, k := range []string{"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service",
		"ValidatingWebhookConfiguration", "Certificate", "Issuer"} {
		if kinds[k] == 0 {
			t.Errorf("config/default has no %s (kinds: %v)", k, kinds)
		}
	}
	waitEstablished(t, c, crds)
	for _, s := range samples {
		apply(t, c, s, true) // the upgraded CRDs accept the samples strictly
	}
	for _, s := range samples {
		_ = c.Delete(ctx, s) // they point at 127.0.0.1:5000; the workload below uses its own registry
	}

	// 3. The ServiceMonitor against the Prometheus Operator's CRD.
	smCRD := readObjects(t, filepath.Join("testdata", "monitoring.coreos.com_servicemonitors.yaml"))
	apply(t, c, smCRD[0], false)
	waitEstablished(t, c, smCRD)
	monitors, err := olm.Kustomize(filepath.Join("..", "..", "config", "prometheus"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range monitors {
		apply(t, c, m, true)
	}
	checkMonitorSelectsService(t, monitors, objs)
	webhookCertDir := checkWebhookWiring(t, objs)

	// 4. The manager under the ServiceAccount's rights.
	for _, crd := range append(trivyOperatorCRDs(t), policyReportCRDs(t)...) {
		apply(t, c, crd, false)
	}
	if _, err := vulndb.BuildGoOSV(filepath.Join("..", "..", vulndb.ShippedOSV), filepath.Join(dir, "vulndb")); err != nil {
		t.Fatalf("building the vulnerability DB: %v", err)
	}
	// The scanner runs as its container does: its own process, with the container's arguments and
	// none of the manager's environment (no kubeconfig, no credentials).
	checkScannerIsolation(t, objs)
	socket := startScanner(t, filepath.Join(filepath.Dir(manager), "portcullis-scanner"), containerArgs(t, objs, "scanner", map[string]string{"--listen": ""}),
		filepath.Join(dir, "scanner.log"))
	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)
	args := deploymentArgs(t, objs, map[string]string{
		"--scanner-socket":            socket,
		"--receiver-bind-address":     freeAddr(t),
		"--metrics-bind-address":      metricsAddr,
		"--health-probe-bind-address": probeAddr,
		"--cache-dir":                 filepath.Join(dir, "cache"),
		"--vulndb-repository":         "", // no internet here: the DB built above instead
		"--webhook-cert-dir":          servingCert(t, filepath.Join(dir, "webhook-certs")),
	})
	if !slices.Contains(args, "--admission") || webhookCertDir == "" {
		t.Fatalf("config/default does not serve the admission webhook: %v", args)
	}
	args = append(args, "--leader-election-namespace="+installNS, "--vulndb-dir="+filepath.Join(dir, "vulndb", "db"),
		"--trivy-operator-reports", "--policy-reports=openreports,wgpolicyk8s", "--webhook-port="+strings.Split(freeAddr(t), ":")[1],
		"--egress-allow=127.0.0.0/8") // the test's registries and fake Harbor are on loopback
	// Informers LIST then WATCH, as against API servers without streaming lists (WatchList): the
	// permissions checked below are those older clusters need too.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	cmd, exited := startManager(t, manager, impersonating(t, dir, adminKubeconfig, "system:serviceaccount:"+installNS+":"+managerSA),
		filepath.Join(dir, "manager.log"), args...)

	registryPassword := workload(t, ctx, c)
	h := harborWorkload(t, ctx, c, cfg)
	scrapeMetrics(t, ctx, c, cs, metricsAddr)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("manager exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("manager did not stop within 30s of SIGTERM")
	}

	// 5. No credential the manager handled appears in what it wrote: its log and the scanner's,
	// events, and the status of every object.
	h.Mu.Lock()
	credentials := append([]string{registryPassword, h.Password}, h.Issued...)
	h.Mu.Unlock()
	if len(credentials) < 3 {
		t.Fatalf("the fake Harbor issued no robot secret: nothing planted to look for")
	}
	checkNoCredentialLeak(t, ctx, c, cs, []string{filepath.Join(dir, "manager.log"), filepath.Join(dir, "scanner.log")}, credentials)

	// 6. What the manager did, from the audit log, against what config/default grants.
	checkRBACExact(t, auditLog, grantedTo(t, objs, managerSA))
}

// workload gives the manager something to do in every kind: a Registry with two images behind a
// password (returned), a policy that verifies signatures with a key from a Secret and scans, then a
// narrower policy so that one ImageAttestation is deleted.
func workload(t *testing.T, ctx context.Context, c client.Client) (password string) {
	t.Helper()
	const ns = "shop"
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	password = fmt.Sprintf("planted-registry-password-%d", time.Now().UnixNano())
	dist := registrytest.StartDistribution(t, registrytest.Options{Username: "shop-robot", Password: password})
	mustCreate(t, c, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "registry-creds", Namespace: ns}, Type: corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "shop-robot", "password": password}})
	appOne := registrytest.RandomImage(t)
	oneDigest := dist.Push(t, "app/one", "v1", appOne)
	old, err := mutate.CreatedAt(registrytest.RandomImage(t), v1.Time{Time: time.Now().Add(-90 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dist.Push(t, "app/one", "v0", old) // retention (dry run) plans to delete it, after checking Pods
	dist.Push(t, "app/two", "v1", registrytest.RandomImage(t))
	mustCreate(t, c, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cosign", Namespace: ns},
		StringData: map[string]string{"cosign.pub": publicKeyPEM(t)}})
	mustCreate(t, c, &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns},
		Spec: v1alpha1.RegistrySpec{URL: dist.URL, Insecure: true, Interval: &metav1.Duration{Duration: 30 * time.Second},
			SecretRef: &v1alpha1.LocalObjectReference{Name: "registry-creds"}}})
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "signed", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"app/**"},
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "ci", IgnoreTransparencyLog: true,
			Key: &v1alpha1.KeyAuthority{SecretRef: &v1alpha1.SecretKeyReference{Name: "cosign", Key: "cosign.pub"}}}}},
		Scanning:  &v1alpha1.ScanningSpec{},
		Retention: &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepWithinDays: ptr(int32(30))}}},
	}}
	mustCreate(t, c, pol)
	// A keyless policy whose trusted root is a ConfigMap (read uncached); this one is not a valid
	// root, so the policy stalls, and it selects no image.
	mustCreate(t, c, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "trusted-root", Namespace: ns},
		Data: map[string]string{"trusted_root.json": "{}"}})
	mustCreate(t, c, &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "keyless", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"keyless/**"},
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "ci", Keyless: &v1alpha1.KeylessAuthority{
			Issuer: "https://issuer.test", Subject: "ci@example.test",
			TrustedRootRef: v1alpha1.TrustedRootReference{Kind: "ConfigMap", Name: "trusted-root"}}}}},
	}})
	judged := func(want int) func() bool {
		return func() bool {
			list := &v1alpha1.ImageAttestationList{}
			if c.List(ctx, list, client.InNamespace(ns)) != nil || len(list.Items) != want {
				return false
			}
			for _, ia := range list.Items {
				cond := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.PolicyCompliantCondition)
				if cond == nil || cond.Status != metav1.ConditionFalse || ia.Status.Vulnerabilities == nil {
					return false
				}
			}
			return true
		}
	}
	waitUntil(t, "all three images verified (unsigned: non-compliant) and scanned", judged(3))
	waitUntil(t, "a retention plan deleting app/one:v0 (dry run)", func() bool {
		p := &v1alpha1.RepositoryPolicy{}
		return c.Get(ctx, client.ObjectKeyFromObject(pol), p) == nil && p.Status.Retention != nil &&
			p.Status.Retention.DryRun && p.Status.Retention.ToDelete == 1
	})
	dist.Push(t, "app/one", "stable", appOne) // one more tag on a judged digest: its ImageAttestation is patched
	waitUntil(t, "the new tag on app/one's ImageAttestation", func() bool {
		list := &v1alpha1.ImageAttestationList{}
		if c.List(ctx, list, client.InNamespace(ns)) != nil {
			return false
		}
		for _, ia := range list.Items {
			if ia.Spec.Digest == oneDigest && slices.Contains(ia.Spec.Tags, "stable") {
				return true
			}
		}
		return false
	})
	waitUntil(t, "trivy-operator VulnerabilityReports", func() bool {
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion("aquasecurity.github.io/v1alpha1")
		list.SetKind("VulnerabilityReportList")
		return c.List(ctx, list, client.InNamespace(ns)) == nil && len(list.Items) == 3
	})
	for _, kind := range []string{"openreports.io/v1alpha1 Report", "wgpolicyk8s.io/v1alpha2 PolicyReport"} {
		waitUntil(t, kind+" of the Registry", func() bool {
			list := &unstructured.UnstructuredList{}
			gv, k, _ := strings.Cut(kind, " ")
			list.SetAPIVersion(gv)
			list.SetKind(k + "List")
			if c.List(ctx, list, client.InNamespace(ns)) != nil || len(list.Items) != 1 {
				return false
			}
			res, _, _ := unstructured.NestedSlice(list.Items[0].Object, "results")
			return len(res) == 3
		})
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(pol), pol); err != nil {
		t.Fatal(err)
	}
	base := pol.DeepCopy()
	pol.Spec.Repositories = []string{"app/one"}
	// A merge patch, not an update: the manager writes the policy's status meanwhile.
	if err := c.Patch(ctx, pol, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the ImageAttestation of app/two deleted", judged(2))
	return password
}

// harborWorkload has the manager write to a (fake, swagger-checked) Harbor: a member and a robot
// whose credentials go to a Secret (create), a rotation (patch), and the robot removed (delete).
func harborWorkload(t *testing.T, ctx context.Context, c client.Client, cfg *rest.Config) *harbortest.Server {
	t.Helper()
	const ns = "platform"
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	h := harbortest.Start(t)
	u, _ := url.Parse(dist.URL)
	h.Mu.Lock()
	h.V2, h.Users["alice"] = httputil.NewSingleHostReverseProxy(u), true
	h.Mu.Unlock()
	h.AddProject("team-a", nil)
	mustCreate(t, c, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "harbor-admin", Namespace: ns}, Type: corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": h.Username, "password": h.Password}})
	mustCreate(t, c, &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "harbor", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
		URL: h.URL, Insecure: true, Provider: v1alpha1.ProviderHarbor, SecretRef: &v1alpha1.LocalObjectReference{Name: "harbor-admin"}}})
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Members: []v1alpha1.Member{{User: "alice", Role: v1alpha1.RoleDeveloper}},
			Robots: []v1alpha1.Robot{{Name: "ci", Permissions: []string{"repository:pull"}, SecretName: "ci-creds", RotateEvery: &metav1.Duration{Duration: time.Hour}}}},
	}}
	mustCreate(t, c, pol)
	// config/default grants no Secret writes: the pass says what to bind, and creates no robot
	// whose secret it could not store.
	waitUntil(t, "the policy asking for the robot-secret-writer RoleBinding", func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(pol), pol) == nil && pol.Status.Enforcement != nil &&
			strings.Contains(pol.Status.Enforcement.Message, controller.RobotSecretWriterRole)
	})
	h.Mu.Lock()
	robots := len(h.Robots)
	h.Mu.Unlock()
	if robots != 0 {
		t.Fatalf("%d robots created in Harbor while their Secrets could not be written", robots)
	}
	mustCreate(t, c, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "portcullis-robot-secrets", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: controller.RobotSecretWriterRole},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: managerSA, Namespace: installNS}}})
	pbase := pol.DeepCopy()
	pol.Spec.Access.Robots[0].RotateEvery = &metav1.Duration{Duration: 2 * time.Hour} // a spec change: a pass now, not in a minute
	if err := c.Patch(ctx, pol, client.MergeFrom(pbase)); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	key := client.ObjectKey{Namespace: ns, Name: "ci-creds"}
	waitUntil(t, "the robot's Secret", func() bool { return c.Get(ctx, key, secret) == nil })
	secretWritesPolicy(t, ctx, c, cfg, ns)
	first := string(secret.Data[corev1.DockerConfigJsonKey])
	base := secret.DeepCopy()
	secret.Annotations[v1alpha1.RotatedAtAnnotation] = time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)
	if err := c.Patch(ctx, secret, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the robot's secret rotated", func() bool {
		return c.Get(ctx, key, secret) == nil && string(secret.Data[corev1.DockerConfigJsonKey]) != first
	})
	if err := c.Get(ctx, client.ObjectKeyFromObject(pol), pol); err != nil {
		t.Fatal(err)
	}
	pbase = pol.DeepCopy()
	pol.Spec.Access.Robots = nil
	if err := c.Patch(ctx, pol, client.MergeFrom(pbase)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the robot's Secret deleted with the robot", func() bool { return apierrors.IsNotFound(c.Get(ctx, key, &corev1.Secret{})) })
	return h
}

// scrapeMetrics reads /metrics over https as a Prometheus would: with its ServiceAccount's token,
// allowed through the portcullis-metrics-reader ClusterRole; a token without it is refused.
func scrapeMetrics(t *testing.T, ctx context.Context, c client.Client, cs kubernetes.Interface, addr string) {
	t.Helper()
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}})
	for _, sa := range []string{"prometheus", "nobody"} {
		mustCreate(t, c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: "monitoring"}})
	}
	mustCreate(t, c, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prometheus-portcullis-metrics"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "portcullis-metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "prometheus", Namespace: "monitoring"}}})
	token := func(sa string) string {
		tr, err := cs.CoreV1().ServiceAccounts("monitoring").CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the manager's self-signed certificate
	get := func(tok string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	var code int
	var body string
	waitUntil(t, "metrics served to the prometheus ServiceAccount", func() bool {
		code, body = get(token("prometheus"))
		return code == http.StatusOK
	})
	if !strings.Contains(body, `portcullis_images{policy="signed",registry="shop/dist",verdict="noncompliant"} 2`) {
		t.Errorf("metrics lack the verdict gauge:\n%s", grepLines(body, "portcullis_images"))
	}
	if code, _ := get(token("nobody")); code != http.StatusForbidden {
		t.Errorf("metrics for a ServiceAccount without portcullis-metrics-reader: HTTP %d, want 403", code)
	}
}

func ptr[T any](v T) *T { return &v }

func publicKeyPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// grepLines returns the lines of s that start with prefix.
func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func mustCreate(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatal(fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err))
	}
}

// secretWritesPolicy checks config/rbac/secret_writes_policy.yaml as applied by config/default:
// a ServiceAccount named like the manager's (in ns, so this test's own requests stay apart from the
// manager's in the audit log), granted the robot-secret-writer ClusterRole there, may write a
// labelled robot Secret and nothing else: no ServiceAccount token Secret, no unlabelled Secret, no
// deletion of a Secret it did not label.
func secretWritesPolicy(t *testing.T, ctx context.Context, c client.Client, cfg *rest.Config, ns string) {
	t.Helper()
	mustCreate(t, c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: managerSA, Namespace: ns}})
	mustCreate(t, c, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "lookalike", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: controller.RobotSecretWriterRole},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: managerSA, Namespace: ns}}})
	as := rest.CopyConfig(cfg)
	as.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + managerSA}
	sc := newClient(t, as)
	robot := map[string]string{v1alpha1.RobotLabel: "probe"}
	refused := []struct {
		what string
		do   func() error
	}{
		{"a ServiceAccount token Secret", func() error {
			return sc.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token", Namespace: ns, Labels: robot,
				Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}}, Type: corev1.SecretTypeServiceAccountToken})
		}},
		{"an unlabelled Secret", func() error {
			return sc.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns}, Type: corev1.SecretTypeDockerConfigJson,
				Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}})
		}},
		{"deleting the Registry's credentials", func() error {
			return sc.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "harbor-admin", Namespace: ns}})
		}},
	}
	for _, r := range refused {
		err := r.do()
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "robot credential") {
			t.Errorf("%s: want refused by the ValidatingAdmissionPolicy, got %v", r.what, err)
		}
	}
	ok := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "robot-probe", Namespace: ns, Labels: robot}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}}
	if err := sc.Create(ctx, ok); err != nil {
		t.Fatalf("a labelled robot Secret: %v", err)
	}
	if err := sc.Delete(ctx, ok); err != nil {
		t.Fatalf("deleting a labelled robot Secret: %v", err)
	}
}
