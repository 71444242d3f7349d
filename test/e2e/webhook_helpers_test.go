package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// checkWebhookWiring checks that config/default's admission webhook pieces fit together: the
// ValidatingWebhookConfiguration calls the webhook Service, whose target port the manager serves;
// cert-manager's Certificate names that Service and its Secret is mounted at the manager's
// --webhook-cert-dir; the CA is injected from that Certificate. It returns the mount path.
func checkWebhookWiring(t *testing.T, objs []*unstructured.Unstructured) string {
	t.Helper()
	find := func(kind string) *unstructured.Unstructured {
		for _, o := range objs {
			if o.GetKind() == kind && (kind != "Service" || strings.HasSuffix(o.GetName(), "webhook-service")) {
				return o
			}
		}
		t.Fatalf("config/default has no %s for the webhook", kind)
		return nil
	}
	vwc, svc, cert, deploy := find("ValidatingWebhookConfiguration"), find("Service"), find("Certificate"), find("Deployment")

	hooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
	if len(hooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(hooks))
	}
	ref, _, _ := unstructured.NestedStringMap(hooks[0].(map[string]any), "clientConfig", "service")
	if ref["name"] != svc.GetName() || ref["namespace"] != svc.GetNamespace() {
		t.Errorf("the webhook calls Service %s/%s, config/default's is %s/%s", ref["namespace"], ref["name"], svc.GetNamespace(), svc.GetName())
	}
	if want := cert.GetNamespace() + "/" + cert.GetName(); vwc.GetAnnotations()["cert-manager.io/inject-ca-from"] != want {
		t.Errorf("cert-manager.io/inject-ca-from is %q, want %q", vwc.GetAnnotations()["cert-manager.io/inject-ca-from"], want)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	if want := svc.GetName() + "." + svc.GetNamespace() + ".svc"; len(dnsNames) == 0 || dnsNames[0] != want {
		t.Errorf("the Certificate names %v, the API server calls %s", dnsNames, want)
	}
	secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")

	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if len(ports) != 1 {
		t.Fatalf("the webhook Service has %d ports, want 1", len(ports))
	}
	target := ports[0].(map[string]any)["targetPort"]
	spec, _, _ := unstructured.NestedMap(deploy.Object, "spec", "template", "spec")
	volume := ""
	vols, _, _ := unstructured.NestedSlice(spec, "volumes")
	for _, v := range vols {
		if s, _, _ := unstructured.NestedString(v.(map[string]any), "secret", "secretName"); s == secretName {
			volume = v.(map[string]any)["name"].(string)
		}
	}
	if volume == "" {
		t.Fatalf("the Deployment mounts no volume of the Certificate's Secret %s", secretName)
	}
	containers, _, _ := unstructured.NestedSlice(spec, "containers")
	for _, c := range containers {
		c := c.(map[string]any)
		if c["name"] != "manager" {
			continue
		}
		served := false
		cports, _, _ := unstructured.NestedSlice(c, "ports")
		for _, p := range cports {
			p := p.(map[string]any)
			served = served || p["containerPort"] == target || p["name"] == target
		}
		if !served {
			t.Errorf("the manager container does not serve the webhook Service's target port %v", target)
		}
		mounted := ""
		mounts, _, _ := unstructured.NestedSlice(c, "volumeMounts")
		for _, m := range mounts {
			if m.(map[string]any)["name"] == volume {
				mounted = m.(map[string]any)["mountPath"].(string)
			}
		}
		args, _, _ := unstructured.NestedStringSlice(c, "args")
		for _, a := range args {
			if dir, ok := strings.CutPrefix(a, "--webhook-cert-dir="); ok {
				if dir != mounted {
					t.Errorf("--webhook-cert-dir=%s, the certificate is mounted at %q", dir, mounted)
				}
				return dir
			}
		}
		t.Errorf("the manager has no --webhook-cert-dir (the certificate is mounted at %q)", mounted)
	}
	return ""
}

// servingCert writes a self-signed serving certificate for 127.0.0.1 as tls.crt and tls.key into
// dir (what cert-manager's Secret holds) and returns dir.
func servingCert(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portcullis-webhook"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{"tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
