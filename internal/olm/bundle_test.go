package olm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/blang/semver/v4"
	"github.com/operator-framework/api/pkg/manifests"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/operator-registry/alpha/declcfg"
	"github.com/operator-framework/operator-registry/alpha/property"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

const root = "../.."

// committedOptions reads the release the committed bundle and catalog describe, so a rebuild with
// them must reproduce the committed files exactly.
func committedOptions(t *testing.T) Options {
	t.Helper()
	var csv operatorsv1alpha1.ClusterServiceVersion
	readYAML(t, filepath.Join(root, "bundle", "manifests", "portcullis.clusterserviceversion.yaml"), &csv)
	cfg, err := declcfg.LoadFS(context.Background(), os.DirFS(filepath.Join(root, "catalog")))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Bundles) != 1 || len(cfg.Channels) != 1 {
		t.Fatalf("catalog has %d bundles and %d channels, want 1 and 1", len(cfg.Bundles), len(cfg.Channels))
	}
	return Options{Root: root, Package: "portcullis", Version: csv.Spec.Version.String(),
		Image: csv.Annotations["containerImage"], BundleImage: cfg.Bundles[0].Image, Channel: cfg.Channels[0].Name}
}

// TestBundleAndCatalogAreCurrent rebuilds the bundle and catalog from config/ and compares them with
// the committed files byte for byte: `make bundle catalog` must have been run after every change to
// config/ (CRDs, RBAC, the Deployment, samples, the base CSV).
func TestBundleAndCatalogAreCurrent(t *testing.T) {
	o := committedOptions(t)
	b, err := BuildBundle(o)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := BuildCatalog(o, b)
	if err != nil {
		t.Fatal(err)
	}
	want := Files{}
	for k, v := range b.Files {
		want[k] = v
	}
	for k, v := range cat {
		want[k] = v
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s differs from a fresh build (err %v): run `make bundle catalog` and commit", name, err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(root, "bundle", "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := want["bundle/manifests/"+e.Name()]; !ok {
			t.Errorf("bundle/manifests/%s is not produced by a fresh build: run `make bundle` and commit", e.Name())
		}
	}
}

// TestBundleValidates runs operator-framework/api's validators on the committed bundle: the default
// bundle validators (CSV, CRDs, bundle) and the OperatorHub suite (OperatorHub v2, standard
// capabilities and categories, good practices, deprecated APIs for Kubernetes 1.36). Errors and
// warnings both fail.
func TestBundleValidates(t *testing.T) {
	bundle, err := manifests.GetBundleFromDir(filepath.Join(root, "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	if bundle.CSV == nil || len(bundle.V1CRDs) != 3 {
		t.Fatalf("bundle loaded with CSV %v and %d v1 CRDs, want a CSV and 3 CRDs", bundle.CSV != nil, len(bundle.V1CRDs))
	}
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.OperatorHubV2Validator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.GoodPracticesValidator,
		validation.AlphaDeprecatedAPIsValidator,
	)
	objs := append(bundle.ObjectsToValidate(), map[string]string{"k8s-version": "1.36"})
	for _, res := range validators.Validate(objs...) {
		for _, e := range res.Errors {
			t.Errorf("%s: %s: %v", res.Name, e.Level, e)
		}
	}
}

// TestCatalogValidates loads the file-based catalog the way `opm validate` does (declcfg → model →
// Validate) and checks that it offers exactly the bundle's version and APIs.
func TestCatalogValidates(t *testing.T) {
	cfg, err := declcfg.LoadFS(context.Background(), os.DirFS(filepath.Join(root, "catalog")))
	if err != nil {
		t.Fatal(err)
	}
	m, err := declcfg.ConvertToModel(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	pkg, ok := m["portcullis"]
	if !ok || pkg.DefaultChannel == nil || pkg.Icon == nil {
		t.Fatalf("catalog has no package portcullis with a default channel and an icon: %+v", pkg)
	}
	var csv operatorsv1alpha1.ClusterServiceVersion
	readYAML(t, filepath.Join(root, "bundle", "manifests", "portcullis.clusterserviceversion.yaml"), &csv)
	b, ok := pkg.DefaultChannel.Bundles[csv.Name]
	if !ok {
		t.Fatalf("default channel %s has no bundle %s", pkg.DefaultChannel.Name, csv.Name)
	}
	if b.Version.String() != csv.Spec.Version.String() {
		t.Errorf("catalog bundle version %s, CSV version %s", b.Version, csv.Spec.Version)
	}
	// An installed older version must have an upgrade edge to this one.
	older, err := semver.Parse("0.0.1-alpha")
	if err != nil {
		t.Fatal(err)
	}
	inRange, err := semver.ParseRange(b.SkipRange)
	if err != nil || !inRange(older) || inRange(b.Version) {
		t.Errorf("bundle %s: skipRange %q must cover every earlier version and not itself", b.Name, csv.Annotations["olm.skipRange"])
	}
	props, err := property.Parse(b.Properties)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range props.GVKs {
		got = append(got, g.Group+"/"+g.Version+"/"+g.Kind)
	}
	var want []string
	for _, d := range csv.Spec.CustomResourceDefinitions.Owned {
		want = append(want, "registry.portcullis.dev/"+d.Version+"/"+d.Kind)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("catalog offers %v, the CSV owns %v", got, want)
	}
	if len(props.CSVMetadatas) != 1 || props.CSVMetadatas[0].DisplayName != csv.Spec.DisplayName {
		t.Errorf("catalog bundle has no olm.csv.metadata for the console")
	}
}

// TestDescriptorPathsExist checks every spec and status descriptor of the base CSV against the CRD
// schema, so a renamed field cannot leave the console pointing at nothing.
func TestDescriptorPathsExist(t *testing.T) {
	b, err := BuildBundle(committedOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range b.CSV.Spec.CustomResourceDefinitions.Owned {
		crd := findCRD(b.CRDs, d.Name)
		var schema *apiextensionsv1.JSONSchemaProps
		for _, v := range crd.Spec.Versions {
			if v.Name == d.Version {
				schema = v.Schema.OpenAPIV3Schema
			}
		}
		if len(d.SpecDescriptors) == 0 || len(d.StatusDescriptors) == 0 {
			t.Errorf("%s: no spec or status descriptors", d.Name)
		}
		for _, sd := range d.SpecDescriptors {
			if !schemaHas(schema, "spec."+sd.Path) {
				t.Errorf("%s: spec descriptor %q names no field of the CRD", d.Name, sd.Path)
			}
		}
		for _, sd := range d.StatusDescriptors {
			if !schemaHas(schema, "status."+sd.Path) {
				t.Errorf("%s: status descriptor %q names no field of the CRD", d.Name, sd.Path)
			}
		}
	}
}

func schemaHas(s *apiextensionsv1.JSONSchemaProps, path string) bool {
	for _, part := range strings.Split(path, ".") {
		if s == nil {
			return false
		}
		if s.Type == "array" && s.Items != nil {
			s = s.Items.Schema
		}
		next, ok := s.Properties[part]
		if !ok {
			return false
		}
		s = &next
	}
	return true
}

// TestBuildBundleRejectsUndescribedCRD: a CRD without display name and descriptors in the base CSV is
// an error naming the CRD, not a bundle with a blank console page.
func TestBuildBundleRejectsUndescribedCRD(t *testing.T) {
	tmp := t.TempDir()
	if err := os.CopyFS(filepath.Join(tmp, "config"), os.DirFS(filepath.Join(root, "config"))); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(tmp, "config", "manifests", "bases", "portcullis.clusterserviceversion.yaml")
	var csv operatorsv1alpha1.ClusterServiceVersion
	readYAML(t, base, &csv)
	owned := csv.Spec.CustomResourceDefinitions.Owned
	csv.Spec.CustomResourceDefinitions.Owned = slices.DeleteFunc(owned, func(d operatorsv1alpha1.CRDDescription) bool {
		return d.Kind == "ImageAttestation"
	})
	data, err := yaml.Marshal(&csv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base, data, 0o644); err != nil {
		t.Fatal(err)
	}
	o := committedOptions(t)
	o.Root = tmp
	_, err = BuildBundle(o)
	if err == nil || !strings.Contains(err.Error(), "imageattestations.registry.portcullis.dev") {
		t.Fatalf("BuildBundle = %v, want an error naming imageattestations.registry.portcullis.dev", err)
	}
	o.Version = "1.0"
	if _, err := BuildBundle(o); err == nil || !strings.Contains(err.Error(), "semantic") {
		t.Fatalf("BuildBundle with version 1.0 = %v, want a semantic version error", err)
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
