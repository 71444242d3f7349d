//go:build e2e

package e2e

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/jsonpath"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/demo"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/scan/vulndb"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// interval is the sample Registry's listing interval in this test (the API's minimum).
const interval = 30 * time.Second

// TestDemoLoop is `make demo` as a test: the real manager binary, a real control plane and CNCF
// Distribution, the demo images built from real software, the vulnerability DB built from
// the shipped Go vulnerability database (third_party/go-vulndb), and the samples. It checks every image's verdict and reasons under both
// policies, that a new push is picked up within one interval, that signing an unsigned image turns it
// compliant, and that the metrics endpoint reports the verdicts. On failure it prints the manager log
// and the objects as YAML.
func TestDemoLoop(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	manager := buildManager(t)
	// The image admission webhook of config/webhook, served by the manager (as `make demo` does).
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../../config/crd/bases"}, ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{"../../config/webhook/manifests.yaml"}}}
	cfg, kubeconfig := startEnv(t, dir, env)
	wo := env.WebhookInstallOptions
	c := newClient(t, cfg)

	if _, err := vulndb.BuildGoOSV(filepath.Join("..", "..", vulndb.ShippedOSV), filepath.Join(dir, "vulndb")); err != nil {
		t.Fatalf("building the vulnerability DB: %v", err)
	}
	// The registry notifies the manager's push receiver (through a forwarder standing in for the
	// Service, as `make demo` does).
	receiverAddr := freeAddr(t)
	forward, stopForward, err := demo.StartForwarder(c, "default", "local", "http://"+receiverAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopForward)
	dist := registrytest.StartDistribution(t, registrytest.Options{Notify: &registrytest.NotifyEndpoint{URL: forward, Token: demo.ReceiverToken}})
	cache := filepath.Join(os.Getenv("PORTCULLIS_CACHE"), "demo")
	if os.Getenv("PORTCULLIS_CACHE") == "" {
		cache = filepath.Join(dir, "demo-cache")
	}
	seeded, err := demo.Seed(dist.Host, cache, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seeded.Skipped {
		t.Logf("skipped: %s", s)
	}

	metrics := freeAddr(t)
	startManager(t, manager, kubeconfig, filepath.Join(dir, "manager.log"),
		"--health-probe-bind-address="+freeAddr(t), "--metrics-bind-address="+metrics, "--metrics-secure=false",
		"--cache-dir="+filepath.Join(dir, "cache"), "--vulndb-dir="+filepath.Join(dir, "vulndb", "db"),
		"--admission", fmt.Sprintf("--webhook-port=%d", wo.LocalServingPort), "--webhook-cert-dir="+wo.LocalServingCertDir,
		"--egress-allow=127.0.0.0/8", // as `make demo` (RUN_ARGS): the demo's registry is on loopback
		"--receiver-bind-address="+receiverAddr)
	const ns = "default"
	if err := demo.ApplySamples(ctx, c, filepath.Join("..", "..", "config", "samples"), ns, dist.URL, seeded.PublicKeyPEM); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpObjects(t, c, ns)
		}
	})
	reg := &v1alpha1.Registry{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "local"}, reg); err != nil {
		t.Fatal(err)
	}
	base := reg.DeepCopy()
	reg.Spec.Interval = &metav1.Duration{Duration: interval}
	// A merge patch, not an update: the manager writes the Registry's status meanwhile.
	if err := c.Patch(ctx, reg, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	if err := demo.EnableNotifications(ctx, c, ns, "local"); err != nil {
		t.Fatal(err)
	}

	// Every seeded image gets its expected verdict under each policy, with Ready=True.
	for _, img := range seeded.Images {
		ia := waitImage(t, c, ns, img.Repository, img.Digest, "a current verdict", 3*time.Minute, func(ia *v1alpha1.ImageAttestation) bool {
			return condIs(ia, v1alpha1.ReadyCondition, metav1.ConditionTrue) && len(ia.Status.Policies) == len(img.Want)
		})
		for pol, want := range img.Want {
			i := slices.IndexFunc(ia.Status.Policies, func(r v1alpha1.PolicyResult) bool { return r.Name == pol })
			if i < 0 {
				t.Errorf("%s:%s: no verdict of policy %s: %+v", img.Repository, img.Tag, pol, ia.Status.Policies)
				continue
			}
			got := ia.Status.Policies[i]
			if got.Compliant != (len(want) == 0) || !slices.Equal(got.Reasons, want) {
				t.Errorf("%s:%s (%s) under %s: compliant=%v reasons %v, want reasons %v", img.Repository, img.Tag, img.About, pol, got.Compliant, got.Reasons, want)
			}
		}
		compliant := true
		for _, want := range img.Want {
			compliant = compliant && len(want) == 0
		}
		if condIs(ia, v1alpha1.PolicyCompliantCondition, metav1.ConditionTrue) != compliant {
			t.Errorf("%s:%s: PolicyCompliant %+v, want compliant=%v", img.Repository, img.Tag,
				apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.PolicyCompliantCondition), compliant)
		}
		// `kubectl get ia` says why: a failed threshold names the severity as the policy counts it,
		// even when the scanner's own columns (Critical, High) read 0.
		if slices.Contains(img.Want["production"], "VulnerabilityThresholdExceeded") {
			if why := printedColumn(t, c, ia, "Why"); !strings.Contains(why, "production: VulnerabilityThresholdExceeded (vulnerabilities ") {
				t.Errorf("%s:%s: kubectl's Why column reads %q; want production's threshold and the counts it exceeded", img.Repository, img.Tag, why)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Admission: in a namespace that opted in, the Deployment of the compliant image is admitted and
	// the one of the image the production policy (mode Enforce) failed is refused, with its reasons.
	deployments, err := demo.AdmissionDeployments(dist.Host, seeded)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, c, demo.AdmissionNamespaceObject())
	for _, d := range deployments {
		err := c.Create(ctx, d.Object)
		switch {
		case d.Admit && err != nil:
			t.Errorf("%s (%s) refused: %v", d.Object.Name, d.Image, err)
		case !d.Admit && err == nil:
			t.Errorf("%s (%s) admitted, want refused", d.Object.Name, d.Image)
		case !d.Admit && !(strings.Contains(err.Error(), "RepositoryPolicy default/production (Enforce)") &&
			strings.Contains(err.Error(), "VulnerabilityThresholdExceeded")):
			t.Errorf("%s refused with %q, want the production policy and its reason", d.Object.Name, err)
		}
	}

	// A new push is judged at push time: the registry's notification reaches the receiver, well
	// inside the listing interval.
	pushed := time.Now()
	fresh := dist.Push(t, "shop/api", "v1.2.0", registrytest.RandomImage(t))
	waitImage(t, c, ns, "shop/api", fresh, "the new push judged (unsigned: SignatureMissing)", interval+time.Minute, func(ia *v1alpha1.ImageAttestation) bool {
		return condIs(ia, v1alpha1.PolicyCompliantCondition, metav1.ConditionFalse) && hasPolicyReason(ia, "production", "SignatureMissing")
	})
	took := time.Since(pushed)
	t.Logf("new push judged %s after the push", took.Round(100*time.Millisecond))
	if took > interval/2 {
		t.Errorf("the new push took %s (listing interval %s): want a verdict through the receiver", took, interval)
	}
	deadline := time.Now().Add(20 * time.Second) // the receiver's counters reach the status every 10 s
	for {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "local"}, reg); err != nil {
			t.Fatal(err)
		}
		if n := reg.Status.Notifications; n != nil && n.Accepted > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Registry's receiver accepted nothing: %+v", reg.Status.Notifications)
		}
		time.Sleep(time.Second)
	}

	// Signing the unsigned worker turns it compliant: the signature is looked for again within one
	// interval (verification results are kept for one interval).
	worker := seeded.Images[slices.IndexFunc(seeded.Images, func(i demo.Image) bool { return i.Repository == "shop/worker" })]
	if err := demo.Sign(dist.Host, worker.Repository, worker.Digest, seeded.Signer); err != nil {
		t.Fatal(err)
	}
	signed := time.Now()
	waitImage(t, c, ns, worker.Repository, worker.Digest, "compliant once signed", 2*interval+time.Minute, func(ia *v1alpha1.ImageAttestation) bool {
		return condIs(ia, v1alpha1.PolicyCompliantCondition, metav1.ConditionTrue) && condIs(ia, v1alpha1.SignatureVerifiedCondition, metav1.ConditionTrue)
	})
	t.Logf("re-signed image compliant %s after signing", time.Since(signed).Round(time.Second))

	// The policies count what they judged, and the metrics endpoint says the same.
	pol := &v1alpha1.RepositoryPolicy{}
	waitUntilFor(t, "production counts the worker as compliant", time.Minute, func() bool {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "production"}, pol) == nil && pol.Status.PendingImages == 0 &&
			pol.Status.CompliantImages == 3 && pol.Status.NonCompliantImages == 3
	})
	body := scrape(t, metrics)
	for _, want := range []string{
		`portcullis_images{policy="production",registry="default/local",verdict="compliant"} 3`,
		`portcullis_images{policy="production",registry="default/local",verdict="noncompliant"} 3`,
		`portcullis_scans_total{result="success"}`,
		`portcullis_verifications_total{result="verified"}`,
		`portcullis_image_findings{kind="vulnerability",registry="default/local",severity="UNKNOWN"} 3`,
		`portcullis_registry_requests_total{code="200",kind="ping",registry="default/local"}`,
		`portcullis_registry_requests_total{`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, `code="error",kind="ping"`) {
		t.Error("pings of the healthy plain-http registry counted as errors")
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grepLines(body, "portcullis_"))
	}

	// Signed VEX: the release key vouches that shop/api:v1.0.0's vulnerabilities do not affect it.
	// Once the production policy applies VEX from that authority, the image passes, and its status
	// says which findings which attestation suppressed. A VEX document by another key is ignored.
	vulnerable := seeded.Images[slices.IndexFunc(seeded.Images, func(i demo.Image) bool { return i.Repository == "shop/api" && i.Tag == "v1.0.0" })]
	ia := waitImage(t, c, ns, vulnerable.Repository, vulnerable.Digest, "scanned", time.Minute, func(ia *v1alpha1.ImageAttestation) bool {
		return ia.Status.Vulnerabilities != nil && len(ia.Status.Vulnerabilities.Top) > 0
	})
	var cves []string
	for _, f := range ia.Status.Vulnerabilities.Top {
		cves = append(cves, f.ID)
	}
	doc := demo.OpenVEX(vulnerable.Repository, vulnerable.Digest, cves, "vulnerable_code_not_in_execute_path")
	if err := demo.AttestVEX(dist.Host, vulnerable.Repository, vulnerable.Digest, seeded.Signer, doc); err != nil {
		t.Fatal(err)
	}
	stranger := verifytest.NewKey(t, "p256", crypto.SHA256)
	if err := demo.AttestVEX(dist.Host, vulnerable.Repository, vulnerable.Digest, stranger.Signer, demo.OpenVEX(vulnerable.Repository, vulnerable.Digest, []string{"CVE-0000-0001"}, "component_not_present")); err != nil {
		t.Fatal(err)
	}
	prod := &v1alpha1.RepositoryPolicy{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "production"}, prod); err != nil {
		t.Fatal(err)
	}
	before := prod.DeepCopy()
	prod.Spec.Scanning.VEX = &v1alpha1.VEXSpec{Authorities: []string{prod.Spec.Verification.Authorities[0].Name}}
	if err := c.Patch(ctx, prod, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	vexed := waitImage(t, c, ns, vulnerable.Repository, vulnerable.Digest, "compliant under production by signed VEX", 2*interval+time.Minute, func(ia *v1alpha1.ImageAttestation) bool {
		i := slices.IndexFunc(ia.Status.Policies, func(r v1alpha1.PolicyResult) bool { return r.Name == "production" })
		return i >= 0 && ia.Status.Policies[i].Compliant && ia.Status.Policies[i].VEX != nil
	})
	res := vexed.Status.Policies[slices.IndexFunc(vexed.Status.Policies, func(r v1alpha1.PolicyResult) bool { return r.Name == "production" })]
	if int(res.VEX.SuppressedCount) != len(cves) || len(res.VEX.Suppressed) != len(cves) || res.VEX.Suppressed[0].Authority != prod.Spec.Verification.Authorities[0].Name ||
		!strings.HasPrefix(res.VEX.Suppressed[0].Source, "sha256:") {
		t.Errorf("production's VEX result %+v, want %d findings suppressed by the release key's attestation", res.VEX, len(cves))
	}
	if len(res.VEX.Ignored) != 1 || !strings.Contains(res.VEX.Ignored[0], "not signed for this digest by a VEX authority") {
		t.Errorf("ignored VEX %q, want the stranger's document", res.VEX.Ignored)
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func condIs(ia *v1alpha1.ImageAttestation, typ string, s metav1.ConditionStatus) bool {
	c := apimeta.FindStatusCondition(ia.Status.Conditions, typ)
	return c != nil && c.Status == s
}

func hasPolicyReason(ia *v1alpha1.ImageAttestation, pol, reason string) bool {
	for _, p := range ia.Status.Policies {
		if p.Name == pol && slices.Contains(p.Reasons, reason) {
			return true
		}
	}
	return false
}

// waitImage waits for the ImageAttestation of repo@digest to satisfy ok.
func waitImage(t *testing.T, c client.Client, ns, repo, digest, what string, timeout time.Duration, ok func(*v1alpha1.ImageAttestation) bool) *v1alpha1.ImageAttestation {
	t.Helper()
	var found *v1alpha1.ImageAttestation
	waitUntilFor(t, repo+"@"+digest+": "+what, timeout, func() bool {
		list := &v1alpha1.ImageAttestationList{}
		if err := c.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			return false
		}
		for i := range list.Items {
			ia := &list.Items[i]
			if ia.Spec.Repository == repo && ia.Spec.Digest == digest && ok(ia) {
				found = ia
				return true
			}
		}
		return false
	})
	return found
}

func waitUntilFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// dumpObjects logs the namespace's Portcullis objects as YAML.
func dumpObjects(t *testing.T, c client.Client, ns string) {
	for _, list := range []client.ObjectList{&v1alpha1.RegistryList{}, &v1alpha1.RepositoryPolicyList{}, &v1alpha1.ImageAttestationList{}} {
		if err := c.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			t.Logf("listing %T: %v", list, err)
			continue
		}
		b, _ := yaml.Marshal(list)
		t.Logf("%T:\n%s", list, b)
	}
}

// printedColumn is what `kubectl get` prints in the named column for obj: the CRD's
// additionalPrinterColumns JSONPath, evaluated as kubectl does.
func printedColumn(t *testing.T, c client.Client, obj client.Object, column string) string {
	t.Helper()
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := c.Get(context.Background(), client.ObjectKey{Name: "imageattestations.registry.portcullis.dev"}, crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		cols, _, _ := unstructured.NestedSlice(v.(map[string]any), "additionalPrinterColumns")
		for _, col := range cols {
			m := col.(map[string]any)
			if m["name"] != column {
				continue
			}
			jp := jsonpath.New(column).AllowMissingKeys(true)
			if err := jp.Parse("{" + m["jsonPath"].(string) + "}"); err != nil {
				t.Fatal(err)
			}
			u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := jp.Execute(&b, u); err != nil {
				t.Fatal(err)
			}
			return b.String()
		}
	}
	t.Fatalf("the ImageAttestation CRD has no %s column", column)
	return ""
}
