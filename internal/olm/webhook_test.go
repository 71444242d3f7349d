package olm

import (
	"slices"
	"strings"
	"testing"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
)

// olmCertDir is where OLM mounts the webhook serving certificate it issues (controller-runtime's
// default, https://olm.operatorframework.io/docs/advanced-tasks/adding-admission-and-conversion-webhooks/).
const olmCertDir = "/tmp/k8s-webhook-server/serving-certs"

// TestBundleWebhook checks that config/default's admission webhook reaches the bundle as OLM installs
// webhooks: one webhookdefinition served by the Deployment on a port the manager listens on, at the
// path and with the rules of config/webhook, failing open (OLM sets the namespaceSelector to every
// namespace of the OperatorGroup); and none of cert-manager's objects, the webhook Service or the
// Deployment's certificate volume (OLM issues, serves and mounts its own).
func TestBundleWebhook(t *testing.T) {
	b, err := BuildBundle(committedOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defs := b.CSV.Spec.WebhookDefinitions
	if len(defs) != 1 {
		t.Fatalf("%d webhookdefinitions, want 1", len(defs))
	}
	d := defs[0]
	dep := b.CSV.Spec.InstallStrategy.StrategySpec.DeploymentSpecs[0]
	if d.Type != operatorsv1alpha1.ValidatingAdmissionWebhook || d.DeploymentName != dep.Name ||
		d.WebhookPath == nil || *d.WebhookPath != "/validate-images" || d.GenerateName != "images.admission.portcullis.dev" {
		t.Errorf("webhookdefinition %+v", d)
	}
	if d.FailurePolicy == nil || *d.FailurePolicy != admissionregistrationv1.Ignore {
		t.Errorf("failurePolicy %v under OLM, want Ignore", d.FailurePolicy)
	}
	if d.SideEffects == nil || *d.SideEffects != admissionregistrationv1.SideEffectClassNone || d.TimeoutSeconds == nil || *d.TimeoutSeconds > 10 {
		t.Errorf("sideEffects %v, timeoutSeconds %v: want None and a short timeout", d.SideEffects, d.TimeoutSeconds)
	}
	var resources []string
	for _, r := range d.Rules {
		resources = append(resources, r.Resources...)
	}
	for _, want := range []string{"pods", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs"} {
		if !slices.Contains(resources, want) {
			t.Errorf("the webhook does not judge %s (rules cover %v)", want, resources)
		}
	}

	manager := dep.Spec.Template.Spec.Containers[0]
	served := false
	for _, p := range manager.Ports {
		served = served || (d.TargetPort != nil && p.ContainerPort == d.TargetPort.IntVal)
	}
	if !served {
		t.Errorf("the manager does not listen on the webhook's target port %v (ports %v)", d.TargetPort, manager.Ports)
	}
	if !slices.Contains(manager.Args, "--admission") || !slices.Contains(manager.Args, "--webhook-cert-dir="+olmCertDir) {
		t.Errorf("the manager's args %v do not serve the webhook with OLM's certificate at %s", manager.Args, olmCertDir)
	}
	for _, m := range manager.VolumeMounts {
		if strings.HasPrefix(m.MountPath, olmCertDir) {
			t.Errorf("the Deployment mounts %s at %s, where OLM mounts its certificate", m.Name, m.MountPath)
		}
	}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			t.Errorf("the Deployment still mounts Secret %s (cert-manager's certificate)", v.Secret.SecretName)
		}
	}
	for name := range b.Files {
		if strings.Contains(name, "cert-manager") || strings.Contains(name, "webhook-service") ||
			strings.Contains(name, "_certificate") || strings.Contains(name, "_issuer") {
			t.Errorf("the bundle ships %s, which OLM provides itself", name)
		}
	}
}
