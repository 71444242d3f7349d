// Package olm builds Portcullis's Operator Lifecycle Manager packaging from config/: the bundle
// (bundle/manifests, bundle/metadata/annotations.yaml, bundle.Dockerfile) and a file-based catalog
// (catalog/). It does what `operator-sdk generate bundle` does for our layout, with the same file names
// and annotations, so the output needs no operator-sdk binary and is reproducible byte for byte.
//
// Formats: the registry+v1 bundle format
// (https://olm.operatorframework.io/docs/tasks/creating-operator-bundle/) and file-based catalogs
// (https://olm.operatorframework.io/docs/reference/file-based-catalogs/).
package olm

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/blang/semver/v4"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Options say which release the packaging describes.
type Options struct {
	// Root is the repository root (the folder holding config/).
	Root string
	// Package is the OLM package name, e.g. "portcullis".
	Package string
	// Version is the operator's semantic version without a leading "v", e.g. "0.1.0".
	Version string
	// Image is the manager image the Deployment runs, e.g. "ghcr.io/portcullis-dev/portcullis:v0.1.0"
	// (in both containers: the manager and its scanner).
	Image string
	// BundleImage is where the bundle image is pushed; the catalog points at it.
	BundleImage string
	// Channel is the one channel the bundle is published in, e.g. "alpha"; it is also the default.
	Channel string
}

// Files maps a path relative to Root to its content.
type Files map[string][]byte

// Write writes every file under root, creating folders as needed.
func (f Files) Write(root string) error {
	for name, data := range f {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Bundle is the packaging built from config/manifests.
type Bundle struct {
	// CSV is the complete ClusterServiceVersion.
	CSV *operatorsv1alpha1.ClusterServiceVersion
	// CRDs are the owned CustomResourceDefinitions, sorted by name.
	CRDs []*apiextensionsv1.CustomResourceDefinition
	// Files are bundle/manifests/*, bundle/metadata/annotations.yaml and bundle.Dockerfile.
	Files Files
}

// BuildBundle runs kustomize on config/manifests (the base CSV, config/default and config/samples) and
// assembles the bundle: the Deployment becomes the CSV's install strategy, the rules of every Role and
// ClusterRole bound to the manager's ServiceAccount become its permissions and clusterPermissions, the
// samples become the alm-examples annotation, the ValidatingWebhookConfiguration becomes its
// webhookdefinitions (see webhooks), and the remaining objects OLM can install (Services, unbound
// ClusterRoles) are shipped as their own manifests. The Namespace, the ServiceAccount, the bindings,
// the webhook Service and cert-manager's objects are left out: OLM creates their equivalents. The
// ValidatingAdmissionPolicy on the manager's Secret writes is left out too: OLM cannot ship it.
func BuildBundle(o Options) (*Bundle, error) {
	if _, err := semver.Parse(o.Version); err != nil {
		return nil, fmt.Errorf("version %q is not semantic (https://semver.org): %w", o.Version, err)
	}
	objs, err := Kustomize(filepath.Join(o.Root, "config", "manifests"))
	if err != nil {
		return nil, err
	}
	icon, err := os.ReadFile(filepath.Join(o.Root, "config", "manifests", "icon.svg"))
	if err != nil {
		return nil, err
	}

	var (
		csv      *operatorsv1alpha1.ClusterServiceVersion
		crds     []*apiextensionsv1.CustomResourceDefinition
		deploy   *appsv1.Deployment
		examples []map[string]any
		roles    = map[string]*unstructured.Unstructured{} // kind/name → Role or ClusterRole
		bindings []*unstructured.Unstructured
		extra    []*unstructured.Unstructured
		sa       string
		hooks    webhooks
	)
	for _, u := range objs {
		if took, err := hooks.add(u); err != nil {
			return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		} else if took {
			continue
		}
		switch gvk := u.GroupVersionKind(); {
		case gvk.Kind == "ClusterServiceVersion":
			csv = &operatorsv1alpha1.ClusterServiceVersion{}
			err = fromUnstructured(u, csv)
		case gvk.Kind == "CustomResourceDefinition":
			crd := &apiextensionsv1.CustomResourceDefinition{}
			err = fromUnstructured(u, crd)
			crds = append(crds, crd)
		case gvk.Kind == "Deployment":
			if deploy != nil {
				return nil, fmt.Errorf("config/default has more than one Deployment (%s, %s)", deploy.Name, u.GetName())
			}
			deploy = &appsv1.Deployment{}
			err = fromUnstructured(u, deploy)
		case gvk.Group == "":
			switch gvk.Kind {
			case "Namespace":
			case "ServiceAccount":
				sa = u.GetName()
			default:
				extra = append(extra, u)
			}
		case gvk.Group == "admissionregistration.k8s.io" && strings.HasPrefix(gvk.Kind, "ValidatingAdmissionPolicy"):
			// OLM cannot install a ValidatingAdmissionPolicy from a bundle (not among the kinds a
			// bundle may ship); docs/security.md has the admin apply config/rbac/secret_writes_policy.yaml.
		case gvk.Kind == "Role" || gvk.Kind == "ClusterRole":
			roles[gvk.Kind+"/"+u.GetName()] = u
		case gvk.Kind == "RoleBinding" || gvk.Kind == "ClusterRoleBinding":
			bindings = append(bindings, u)
		case strings.HasSuffix(gvk.Group, ".portcullis.dev"):
			examples = append(examples, u.Object)
		default:
			extra = append(extra, u)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	switch {
	case csv == nil:
		return nil, fmt.Errorf("config/manifests has no ClusterServiceVersion base")
	case deploy == nil:
		return nil, fmt.Errorf("config/manifests has no Deployment")
	case sa == "":
		return nil, fmt.Errorf("config/manifests has no ServiceAccount")
	case deploy.Spec.Template.Spec.ServiceAccountName != sa:
		return nil, fmt.Errorf("the Deployment runs as %q, not as the ServiceAccount %q", deploy.Spec.Template.Spec.ServiceAccountName, sa)
	}
	sort.Slice(crds, func(i, j int) bool { return crds[i].Name < crds[j].Name })
	extra = append(extra, hooks.rest()...)
	webhookDefs, err := hooks.descriptions(deploy)
	if err != nil {
		return nil, err
	}
	hooks.dropCertVolumes(deploy)

	permissions, clusterPermissions, bound, err := permissionsFor(sa, roles, bindings)
	if err != nil {
		return nil, err
	}
	for key, role := range roles {
		if !bound[key] {
			extra = append(extra, role)
		}
	}

	// The manager and its scanner container run the same image (two binaries).
	for i := range deploy.Spec.Template.Spec.Containers {
		if c := &deploy.Spec.Template.Spec.Containers[i]; c.Name == "manager" || c.Name == "scanner" {
			c.Image = o.Image
		}
	}
	if err := completeCSV(csv, o, icon, crds, deploy, permissions, clusterPermissions, examples); err != nil {
		return nil, err
	}
	csv.Spec.WebhookDefinitions = webhookDefs

	b := &Bundle{CSV: csv, CRDs: crds, Files: Files{}}
	csvYAML, err := marshal(csv)
	if err != nil {
		return nil, err
	}
	b.Files["bundle/manifests/"+o.Package+".clusterserviceversion.yaml"] = csvYAML
	for _, crd := range crds {
		data, err := marshal(crd)
		if err != nil {
			return nil, err
		}
		b.Files["bundle/manifests/"+crd.Spec.Group+"_"+crd.Spec.Names.Plural+".yaml"] = data
	}
	for _, u := range extra {
		gvk := u.GroupVersionKind()
		gv := gvk.Version
		if gvk.Group != "" {
			gv = gvk.Group + "_" + gvk.Version
		}
		u.SetNamespace("") // OLM installs them into the operator's namespace
		data, err := marshal(u.Object)
		if err != nil {
			return nil, err
		}
		b.Files["bundle/manifests/"+strings.ToLower(u.GetName()+"_"+gv+"_"+gvk.Kind)+".yaml"] = data
	}
	b.Files["bundle/metadata/annotations.yaml"] = annotationsYAML(o)
	b.Files["bundle.Dockerfile"] = dockerfile(o)
	return b, nil
}

// SkipRange is the range of versions a bundle of version upgrades from: every earlier one.
func SkipRange(version string) string { return "<" + version }

// completeCSV fills in everything the base CSV leaves to the build.
func completeCSV(csv *operatorsv1alpha1.ClusterServiceVersion, o Options, icon []byte,
	crds []*apiextensionsv1.CustomResourceDefinition, deploy *appsv1.Deployment,
	permissions, clusterPermissions []operatorsv1alpha1.StrategyDeploymentPermissions, examples []map[string]any) error {
	csv.Name = o.Package + ".v" + o.Version
	csv.Namespace = ""
	csv.Spec.Version.Version = semver.MustParse(o.Version)
	csv.Spec.Icon = []operatorsv1alpha1.Icon{{Data: b64(icon), MediaType: "image/svg+xml"}}
	if csv.Annotations == nil {
		csv.Annotations = map[string]string{}
	}
	csv.Annotations["containerImage"] = o.Image
	// Any earlier version upgrades straight to this one (one bundle per catalog, no replaces chain).
	csv.Annotations["olm.skipRange"] = SkipRange(o.Version)
	sort.Slice(examples, func(i, j int) bool {
		ki, kj := examples[i]["kind"].(string), examples[j]["kind"].(string)
		if ki != kj {
			return ki < kj
		}
		return nameOf(examples[i]) < nameOf(examples[j])
	})
	alm, err := json.MarshalIndent(examples, "", "  ")
	if err != nil {
		return err
	}
	csv.Annotations["alm-examples"] = string(alm)

	// Owned CRDs: the base holds display names and descriptors; versions must match the CRDs.
	described := map[string]bool{}
	for i := range csv.Spec.CustomResourceDefinitions.Owned {
		d := &csv.Spec.CustomResourceDefinitions.Owned[i]
		crd := findCRD(crds, d.Name)
		if crd == nil {
			return fmt.Errorf("the base CSV describes %s, which config/crd does not define", d.Name)
		}
		if d.Kind != crd.Spec.Names.Kind || !servedVersion(crd, d.Version) {
			return fmt.Errorf("the base CSV describes %s as %s %s; the CRD has kind %s and no served version %s",
				d.Name, d.Kind, d.Version, crd.Spec.Names.Kind, d.Version)
		}
		described[d.Name] = true
	}
	for _, crd := range crds {
		if !described[crd.Name] {
			return fmt.Errorf("CRD %s has no entry in the base CSV's customresourcedefinitions.owned (display name, descriptors)", crd.Name)
		}
	}

	csv.Spec.InstallStrategy = operatorsv1alpha1.NamedInstallStrategy{
		StrategyName: operatorsv1alpha1.InstallStrategyNameDeployment,
		StrategySpec: operatorsv1alpha1.StrategyDetailsDeployment{
			DeploymentSpecs: []operatorsv1alpha1.StrategyDeploymentSpec{{
				Name: deploy.Name, Label: deploy.Labels, Spec: deploy.Spec,
			}},
			Permissions:        permissions,
			ClusterPermissions: clusterPermissions,
		},
	}
	return nil
}

// permissionsFor turns the roles bound to the ServiceAccount sa into the CSV's permissions (Roles) and
// clusterPermissions (ClusterRoles), and reports which roles were bound.
func permissionsFor(sa string, roles map[string]*unstructured.Unstructured, bindings []*unstructured.Unstructured) (
	perms, clusterPerms []operatorsv1alpha1.StrategyDeploymentPermissions, bound map[string]bool, err error) {
	bound = map[string]bool{}
	var nsRules, clusterRules []rbacv1.PolicyRule
	sort.Slice(bindings, func(i, j int) bool { return bindings[i].GetName() < bindings[j].GetName() })
	for _, b := range bindings {
		var rb rbacv1.RoleBinding // RoleBinding and ClusterRoleBinding share subjects and roleRef
		if err := fromUnstructured(b, &rb); err != nil {
			return nil, nil, nil, err
		}
		ours := false
		for _, s := range rb.Subjects {
			ours = ours || (s.Kind == rbacv1.ServiceAccountKind && s.Name == sa)
		}
		if !ours {
			return nil, nil, nil, fmt.Errorf("%s %s binds subjects other than the manager's ServiceAccount; OLM cannot ship it", b.GetKind(), b.GetName())
		}
		key := rb.RoleRef.Kind + "/" + rb.RoleRef.Name
		role, ok := roles[key]
		if !ok {
			return nil, nil, nil, fmt.Errorf("%s %s refers to %s, which config/ does not define", b.GetKind(), b.GetName(), key)
		}
		var r rbacv1.ClusterRole // Role and ClusterRole share rules
		if err := fromUnstructured(role, &r); err != nil {
			return nil, nil, nil, err
		}
		bound[key] = true
		if b.GetKind() == "RoleBinding" {
			nsRules = append(nsRules, r.Rules...)
		} else {
			clusterRules = append(clusterRules, r.Rules...)
		}
	}
	if len(nsRules) > 0 {
		perms = []operatorsv1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: sa, Rules: nsRules}}
	}
	if len(clusterRules) > 0 {
		clusterPerms = []operatorsv1alpha1.StrategyDeploymentPermissions{{ServiceAccountName: sa, Rules: clusterRules}}
	}
	return perms, clusterPerms, bound, nil
}

// Annotations are the bundle's metadata/annotations.yaml keys; bundle.Dockerfile repeats them as labels.
func Annotations(o Options) [][2]string {
	return [][2]string{
		{"operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"},
		{"operators.operatorframework.io.bundle.manifests.v1", "manifests/"},
		{"operators.operatorframework.io.bundle.metadata.v1", "metadata/"},
		{"operators.operatorframework.io.bundle.package.v1", o.Package},
		{"operators.operatorframework.io.bundle.channels.v1", o.Channel},
		{"operators.operatorframework.io.bundle.channel.default.v1", o.Channel},
	}
}

func annotationsYAML(o Options) []byte {
	var buf bytes.Buffer
	buf.WriteString("annotations:\n")
	for _, kv := range Annotations(o) {
		fmt.Fprintf(&buf, "  %s: %s\n", kv[0], kv[1])
	}
	return buf.Bytes()
}

func dockerfile(o Options) []byte {
	var buf bytes.Buffer
	buf.WriteString("# The OLM bundle image, generated by `make bundle`. Build from the repository root:\n")
	buf.WriteString("#   docker build -f bundle.Dockerfile -t <bundle image> .\n")
	buf.WriteString("FROM scratch\n\n")
	for _, kv := range Annotations(o) {
		fmt.Fprintf(&buf, "LABEL %s=%s\n", kv[0], kv[1])
	}
	buf.WriteString("\nCOPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\n")
	return buf.Bytes()
}

// Kustomize runs kustomize (the library the kustomize CLI is built from) on dir, as `kustomize build
// dir` does, and returns the objects in its output order (kinds in the CLI's "legacy" order).
func Kustomize(dir string) ([]*unstructured.Unstructured, error) {
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy // the CLI's default: Namespaces and CRDs first
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range m.Resources() {
		data, err := r.MarshalJSON() // through JSON, so numbers are int64/float64 as in any unstructured object
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true)
}

func marshal(v any) ([]byte, error) { return yaml.Marshal(v) }

func b64(data []byte) string { return base64.StdEncoding.EncodeToString(data) }

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

func findCRD(crds []*apiextensionsv1.CustomResourceDefinition, name string) *apiextensionsv1.CustomResourceDefinition {
	for _, c := range crds {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func servedVersion(crd *apiextensionsv1.CustomResourceDefinition, v string) bool {
	for _, ver := range crd.Spec.Versions {
		if ver.Name == v && ver.Served {
			return true
		}
	}
	return false
}

func nameOf(obj map[string]any) string {
	md, _ := obj["metadata"].(map[string]any)
	n, _ := md["name"].(string)
	return n
}
