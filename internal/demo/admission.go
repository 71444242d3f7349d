package demo

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AdmissionNamespace is the namespace the demo deploys into, opted in to image admission.
const AdmissionNamespace = "shop"

// Deployment is one workload the demo applies at admission and whether it must be admitted.
type Deployment struct {
	// Object is the Deployment, in AdmissionNamespace.
	Object *appsv1.Deployment
	// Image is the reference it runs; Admit says whether the webhook must admit it.
	Image string
	Admit bool
	// Why says why, for people.
	Why string
}

// AdmissionNamespaceObject is AdmissionNamespace, labelled registry.portcullis.dev/admission=enabled.
func AdmissionNamespaceObject() *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: AdmissionNamespace, Labels: map[string]string{"registry.portcullis.dev/admission": "enabled"}}}
}

// AdmissionDeployments are the demo's two Deployments of shop/api from the registry at host: v1.1.0,
// compliant under the production policy (mode Enforce), is admitted; v1.0.0, with a vulnerable Go
// module, is refused. It fails when s has no such images.
func AdmissionDeployments(host string, s *Seeded) ([]Deployment, error) {
	var out []Deployment
	for _, want := range []struct {
		tag, name string
		admit     bool
		why       string
	}{
		{"v1.1.0", "api", true, "signed, no known vulnerability"},
		{"v1.0.0", "api-old", false, "a vulnerable golang.org/x/text under the production policy, mode Enforce"},
	} {
		found := false
		for _, img := range s.Images {
			found = found || (img.Repository == "shop/api" && img.Tag == want.tag)
		}
		if !found {
			return nil, fmt.Errorf("the demo images have no shop/api:%s", want.tag)
		}
		ref := strings.TrimSuffix(host, "/") + "/shop/api:" + want.tag
		out = append(out, Deployment{Object: deployment(want.name, ref), Image: ref, Admit: want.admit, Why: want.why})
	}
	return out, nil
}

func deployment(name, image string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: AdmissionNamespace},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: image}}},
			},
		},
	}
}
