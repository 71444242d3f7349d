package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// ApplySamples creates every object of the samples folder in namespace ns, with the Registry's url
// pointed at registryURL and the first key authority of a policy set to pubPEM.
func ApplySamples(ctx context.Context, c client.Client, dir, ns, registryURL string, pubPEM []byte) error {
	var kust struct {
		Resources []string `json:"resources"`
	}
	if err := readYAML(filepath.Join(dir, "kustomization.yaml"), &kust); err != nil {
		return err
	}
	for _, f := range kust.Resources {
		u := &unstructured.Unstructured{}
		if err := readYAML(filepath.Join(dir, f), &u.Object); err != nil {
			return err
		}
		if u.GetKind() == "ImageAttestation" {
			continue // written by the manager, not by users
		}
		u.SetNamespace(ns)
		if u.GetKind() == "Registry" {
			if err := unstructured.SetNestedField(u.Object, registryURL, "spec", "url"); err != nil {
				return err
			}
		}
		if auths, ok, _ := unstructured.NestedSlice(u.Object, "spec", "verification", "authorities"); ok && len(auths) > 0 && pubPEM != nil {
			if a, ok := auths[0].(map[string]any); ok && a["key"] != nil {
				a["key"] = map[string]any{"data": string(pubPEM)}
				a["ignoreTransparencyLog"] = true
				if err := unstructured.SetNestedSlice(u.Object, auths, "spec", "verification", "authorities"); err != nil {
					return err
				}
			}
		}
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("applying %s: %w", f, err)
		}
	}
	return nil
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(data, into)
}
