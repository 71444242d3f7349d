package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/portcullis-dev/portcullis/internal/demo"
)

// showAdmission applies the demo's Deployments with kubectl, as a user would, into a namespace
// opted in to image admission, so the admitted one and the refused one (with the webhook's message)
// are on screen. The manifests are written under state/admission for a second try by hand.
func showAdmission(ctx context.Context, c client.Client, kubeconfig, state string, deployments []demo.Deployment) {
	dir, err := filepath.Abs(filepath.Join(state, "admission"))
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localenv: admission demo:", err)
		return
	}
	write := func(name string, obj any) string {
		path := filepath.Join(dir, name+".yaml")
		data, err := yaml.Marshal(obj)
		if err == nil {
			err = os.WriteFile(path, data, 0o600)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "localenv: admission demo:", err)
		}
		return path
	}
	fmt.Fprintf(os.Stderr, "\nlocalenv: admission: deploying into namespace %s, labelled registry.portcullis.dev/admission=enabled\n", demo.AdmissionNamespace)
	_ = runKubectl(ctx, kubeconfig, "apply", "-f", write("namespace", demo.AdmissionNamespaceObject()))
	for _, d := range deployments {
		fmt.Fprintf(os.Stderr, "\nlocalenv: %s runs %s (%s): expect it %s\n", d.Object.Name, d.Image, d.Why, map[bool]string{true: "admitted", false: "refused"}[d.Admit])
		err := runKubectl(ctx, kubeconfig, "apply", "-f", write("deployment-"+d.Object.Name, d.Object))
		if got := err == nil; got != d.Admit {
			fmt.Fprintf(os.Stderr, "localenv: UNEXPECTED: %s was %s\n", d.Object.Name, map[bool]string{true: "admitted", false: "refused"}[got])
		}
	}
	fmt.Fprintf(os.Stderr, "\nlocalenv: the refusal is also an event: kubectl get events -n %s --field-selector reason=ImageRefused\n", demo.AdmissionNamespace)
}
