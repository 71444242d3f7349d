package olm

import (
	"fmt"
	"slices"
	"strings"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// webhooks is what config/default ships for admission webhooks, which OLM installs its own way
// (https://olm.operatorframework.io/docs/advanced-tasks/adding-admission-and-conversion-webhooks/):
// the CSV's webhookdefinitions replace the ValidatingWebhookConfiguration, OLM creates the Service
// (named after the Deployment) and issues and mounts the serving certificate, so the webhook Service,
// cert-manager's Issuer and Certificate, and the Deployment's volume of the Certificate's Secret are
// left out of the bundle.
type webhooks struct {
	configs      []*admissionregistrationv1.ValidatingWebhookConfiguration
	services     map[string]*corev1.Service // by name
	raw          map[string]*unstructured.Unstructured
	certSecrets  []string // Secrets cert-manager's Certificates write
	certManagers int
}

// add takes u when it is a webhook piece and reports whether it did.
func (w *webhooks) add(u *unstructured.Unstructured) (bool, error) {
	gvk := u.GroupVersionKind()
	switch {
	case gvk.Group == "cert-manager.io":
		if gvk.Kind == "Certificate" {
			s, _, _ := unstructured.NestedString(u.Object, "spec", "secretName")
			w.certSecrets = append(w.certSecrets, s)
		}
		w.certManagers++
		return true, nil
	case gvk.Group == "admissionregistration.k8s.io" && gvk.Kind == "ValidatingWebhookConfiguration":
		vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := fromUnstructured(u, vwc); err != nil {
			return false, err
		}
		w.configs = append(w.configs, vwc)
		return true, nil
	case gvk.Group == "admissionregistration.k8s.io" && strings.HasPrefix(gvk.Kind, "ValidatingAdmissionPolicy"):
		return false, nil // not a webhook: BuildBundle leaves it out
	case gvk.Group == "admissionregistration.k8s.io":
		return false, fmt.Errorf("%s %s: only validating webhooks are supported in the bundle", gvk.Kind, u.GetName())
	case gvk.Group == "" && gvk.Kind == "Service":
		svc := &corev1.Service{}
		if err := fromUnstructured(u, svc); err != nil {
			return false, err
		}
		if w.services == nil {
			w.services, w.raw = map[string]*corev1.Service{}, map[string]*unstructured.Unstructured{}
		}
		w.services[svc.Name], w.raw[svc.Name] = svc, u
		return true, nil // handed back by rest unless a webhook calls it
	}
	return false, nil
}

// rest returns the Services no webhook calls, to ship as their own manifests.
func (w *webhooks) rest() []*unstructured.Unstructured {
	called := map[string]bool{}
	for _, c := range w.configs {
		for _, h := range c.Webhooks {
			if h.ClientConfig.Service != nil {
				called[h.ClientConfig.Service.Name] = true
			}
		}
	}
	var out []*unstructured.Unstructured
	for name, u := range w.raw {
		if !called[name] {
			out = append(out, u)
		}
	}
	return out
}

// descriptions converts the webhook configurations into the CSV's webhookdefinitions, served by
// deploy. Each keeps its rules, timeout, side effects, match policy and object selector. Two things
// change, because OLM sets them:
//   - the namespaceSelector is OLM's (the OperatorGroup's; every namespace in AllNamespaces mode), so
//     the opt-in label is checked by the handler itself (internal/admission), and
//   - the failurePolicy becomes Ignore: with a selector that covers every namespace, Fail would stop
//     every workload in the cluster (the manager's own Pod included) while the manager is down.
func (w *webhooks) descriptions(deploy *appsv1.Deployment) ([]operatorsv1alpha1.WebhookDescription, error) {
	var out []operatorsv1alpha1.WebhookDescription
	for _, c := range w.configs {
		for _, h := range c.Webhooks {
			ref := h.ClientConfig.Service
			if ref == nil {
				return nil, fmt.Errorf("webhook %s calls a URL; OLM needs a Service of the Deployment", h.Name)
			}
			svc, ok := w.services[ref.Name]
			if !ok {
				return nil, fmt.Errorf("webhook %s calls Service %s, which config/default does not define", h.Name, ref.Name)
			}
			port := int32(443)
			if ref.Port != nil {
				port = *ref.Port
			}
			var target *intstr.IntOrString
			for _, p := range svc.Spec.Ports {
				if p.Port == port {
					t := p.TargetPort
					target = &t
				}
			}
			if target == nil {
				return nil, fmt.Errorf("webhook %s calls port %d of Service %s, which has no such port", h.Name, port, ref.Name)
			}
			ignore := admissionregistrationv1.Ignore
			out = append(out, operatorsv1alpha1.WebhookDescription{
				GenerateName: h.Name, Type: operatorsv1alpha1.ValidatingAdmissionWebhook, DeploymentName: deploy.Name,
				ContainerPort: port, TargetPort: target, Rules: h.Rules, FailurePolicy: &ignore, MatchPolicy: h.MatchPolicy,
				ObjectSelector: h.ObjectSelector, SideEffects: h.SideEffects, TimeoutSeconds: h.TimeoutSeconds,
				AdmissionReviewVersions: h.AdmissionReviewVersions, WebhookPath: ref.Path,
			})
		}
	}
	return out, nil
}

// dropCertVolumes removes the Deployment's volumes of cert-manager's Secrets and their mounts: OLM
// mounts its own certificate at controller-runtime's default path.
func (w *webhooks) dropCertVolumes(deploy *appsv1.Deployment) {
	spec := &deploy.Spec.Template.Spec
	var dropped []string
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool {
		drop := v.Secret != nil && slices.Contains(w.certSecrets, v.Secret.SecretName)
		if drop {
			dropped = append(dropped, v.Name)
		}
		return drop
	})
	for i := range spec.Containers {
		c := &spec.Containers[i]
		c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return slices.Contains(dropped, m.Name) })
	}
}
