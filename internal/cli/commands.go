package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// parseError is a command-line parsing error, which the flag package has already printed with the
// usage.
type parseError struct{ error }

func (e parseError) Unwrap() error { return e.error }

func newFlags(name, about string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "%s\n\nFlags:\n", about)
		fs.PrintDefaults()
	}
	return fs
}

func runReport(ctx context.Context, args []string, env Env) error {
	fs := newFlags("report", `Usage: portcullis report [-n NAMESPACE] [-o markdown|csv|json|html]

A compliance report per Registry and policy: counts, the non-compliant images with their reasons and
since when, the oldest non-compliance, the vulnerability exceptions that expire within 30 days, and
(html) a chart of compliance over time from the images' verdict history. Reads the cluster only.`, env)
	var c common
	c.register(fs)
	format := fs.String("o", "markdown", "Output format: markdown, csv, json or html (one self-contained page).")
	if err := fs.Parse(args); err != nil {
		return parseError{err}
	}
	if !slices.Contains(append(reportFormats, "md"), *format) {
		return fmt.Errorf("unknown format %q: want one of %s", *format, strings.Join(reportFormats, ", "))
	}
	cl, err := env.Client(c.kubeconfig, c.context)
	if err != nil {
		return err
	}
	var opts []client.ListOption
	if c.namespace != "" {
		opts = append(opts, client.InNamespace(c.namespace))
	}
	regs, pols := &v1alpha1.RegistryList{}, &v1alpha1.RepositoryPolicyList{}
	if err := cl.List(ctx, regs, opts...); err != nil {
		return fmt.Errorf("listing Registries: %w", err)
	}
	if err := cl.List(ctx, pols, opts...); err != nil {
		return fmt.Errorf("listing RepositoryPolicies: %w", err)
	}
	ias, err := listImages(ctx, cl, c.namespace, env.Stderr)
	if err != nil {
		return err
	}
	return Render(env.Stdout, BuildReport(regs.Items, pols.Items, ias, env.Now()), *format)
}

// Change is one image's verdict under the policy as applied and as in the file.
type Change struct {
	Repository string   `json:"repository"`
	Digest     string   `json:"digest"`
	Tags       []string `json:"tags"`
	// Now and WouldBe are Compliant, NonCompliant or NotSelected (the policy does not select it).
	Now     string   `json:"now"`
	WouldBe string   `json:"wouldBe"`
	Reasons []string `json:"reasons,omitempty"`
	// Notes say where the stored evidence is less than the manager's (policy.StoredEvidence).
	Notes []string `json:"notes,omitempty"`
}

// WhatIf is the outcome of what-if: the images whose verdict would change, and counts.
type WhatIf struct {
	Policy    string `json:"policy"`
	Namespace string `json:"namespace"`
	Registry  string `json:"registry"`
	Images    int    `json:"images"`
	// AppliedRegistry is the applied policy's Registry when the file names another one (moving the
	// policy), and AppliedImages how many images it has; their verdicts under the policy would end.
	AppliedRegistry string   `json:"appliedRegistry,omitempty"`
	AppliedImages   int      `json:"appliedImages,omitempty"`
	Changes         []Change `json:"changes"`
	Unchanged       int      `json:"unchanged"`
	// Retention is the retention plan of a policy with spec.retention (nil without).
	Retention *RetentionWhatIf `json:"retention,omitempty"`
}

const notSelected = "NotSelected"

func runWhatIf(ctx context.Context, args []string, env Env) (int, error) {
	fs := newFlags("what-if", `Usage: portcullis what-if -f POLICY.yaml [-n NAMESPACE] [-o text|json]

Evaluates a new or changed RepositoryPolicy against the current inventory and stored results of
its Registry, without applying it: which images would change verdict and why. Nothing is written to
the cluster or to a registry. Signatures are taken as verified only when the policy of the same name
verifies them the same way; findings come from the images' status (exact counts per severity; IDs for
the top 20).

When the policy or the applied one has spec.retention, it also lists the repositories they govern
from the registry (GET and HEAD only) and plans them under both as the manager would: each digest
either plan deletes, with its outcome now and with the file (Delete, DryRun, Keep). The registry is
read with your own registry logins by default (--registry-auth). Exit code 1 when a verdict or a
retention outcome would change.`, env)
	var c common
	c.register(fs)
	file := fs.String("f", "", "The RepositoryPolicy manifest (YAML or JSON; - for stdin).")
	format := fs.String("o", "text", "Output format: text or json.")
	var ro retentionOptions
	fs.StringVar(&ro.auth, "registry-auth", AuthKeychain, "Credentials for reading the registry (retention preview): keychain (your docker/crane logins), secret (the Registry's spec.secretRef, read from the cluster) or anonymous.")
	fs.BoolVar(&ro.skip, "skip-retention", false, "Do not read the registry: no retention preview.")
	if err := fs.Parse(args); err != nil {
		return ExitError, parseError{err}
	}
	if *file == "" {
		return ExitError, fmt.Errorf("what-if needs -f POLICY.yaml")
	}
	if *format != "text" && *format != "json" {
		return ExitError, fmt.Errorf("unknown format %q: want text or json", *format)
	}
	if !slices.Contains([]string{AuthKeychain, AuthSecret, AuthAnonymous}, ro.auth) {
		return ExitError, fmt.Errorf("unknown --registry-auth %q: want %s, %s or %s", ro.auth, AuthKeychain, AuthSecret, AuthAnonymous)
	}
	pol, err := readPolicy(*file)
	if err != nil {
		return ExitError, err
	}
	switch {
	case c.namespace != "" && pol.Namespace != "" && pol.Namespace != c.namespace:
		return ExitError, fmt.Errorf("the policy's namespace %q does not match -n %q", pol.Namespace, c.namespace)
	case c.namespace != "":
		pol.Namespace = c.namespace
	case pol.Namespace == "":
		pol.Namespace = "default"
	}
	cl, err := env.Client(c.kubeconfig, c.context)
	if err != nil {
		return ExitError, err
	}
	switch err := cl.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, &v1alpha1.Registry{}); {
	case apierrors.IsNotFound(err):
		return ExitError, fmt.Errorf("spec.registryRef: no Registry %q in namespace %q", pol.Spec.RegistryRef.Name, pol.Namespace)
	case err != nil:
		return ExitError, fmt.Errorf("reading Registry %s/%s: %w", pol.Namespace, pol.Spec.RegistryRef.Name, err)
	}
	applied := &v1alpha1.RepositoryPolicy{}
	switch err := cl.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Name}, applied); {
	case apierrors.IsNotFound(err):
		applied = nil
	case err != nil:
		return ExitError, fmt.Errorf("reading RepositoryPolicy %s/%s: %w", pol.Namespace, pol.Name, err)
	}
	ias, err := listImages(ctx, cl, pol.Namespace, env.Stderr)
	if err != nil {
		return ExitError, err
	}
	out := EvaluateWhatIf(pol, applied, ias, env.Now())
	// A retention preview that fails still prints the verdicts, then exits 2 with the error.
	var previewErr error
	if out.Retention, previewErr = previewRetention(ctx, cl, pol, applied, ias, ro, env.Now(), env.Stderr); previewErr != nil {
		out.Retention = &RetentionWhatIf{Planned: hasRetention(pol), Failed: true, Skipped: "the retention preview failed (the error is on stderr)", Digests: []RetentionDigest{}}
	}
	if *format == "json" {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return ExitError, err
		}
	} else {
		writeWhatIf(env, out)
	}
	if previewErr != nil {
		return ExitError, previewErr
	}
	if len(out.Changes) > 0 || out.Retention.Changed() {
		return ExitChanges, nil
	}
	return ExitOK, nil
}

// readPolicy reads one RepositoryPolicy from a YAML or JSON file (- for stdin), strictly: an
// unknown field is an error, as the API server's strict validation would have it.
func readPolicy(path string) (*v1alpha1.RepositoryPolicy, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	// One document: a second one (after ---) would be silently ignored.
	docs := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var js []byte
	for {
		doc, err := docs.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		j, err := yaml.ToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if t := bytes.TrimSpace(j); len(t) == 0 || string(t) == "null" {
			continue // an empty document or comments only
		}
		if js != nil {
			return nil, fmt.Errorf("%s holds more than one document: what-if takes one RepositoryPolicy", path)
		}
		js = j
	}
	// The kind first, so that another kind is named as such rather than by its first unknown field.
	var tm metav1.TypeMeta
	_ = json.Unmarshal(js, &tm)
	if tm.Kind != "RepositoryPolicy" || tm.APIVersion != v1alpha1.GroupVersion.String() {
		return nil, fmt.Errorf("%s: kind %q, apiVersion %q: want a RepositoryPolicy of %s", path, tm.Kind, tm.APIVersion, v1alpha1.GroupVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	pol := &v1alpha1.RepositoryPolicy{}
	if err := dec.Decode(pol); err != nil {
		return nil, fmt.Errorf("%s: not a RepositoryPolicy: %w", path, err)
	}
	switch {
	case pol.Name == "":
		return nil, fmt.Errorf("%s: the policy has no metadata.name", path)
	case pol.Spec.RegistryRef.Name == "":
		return nil, fmt.Errorf("%s: the policy has no spec.registryRef.name", path)
	}
	return pol, nil
}

func writeWhatIf(env Env, w WhatIf) {
	defer writeRetention(env.Stdout, w.Retention)
	fmt.Fprintf(env.Stdout, "RepositoryPolicy %s/%s against the %d images of Registry %s", w.Namespace, w.Policy, w.Images, w.Registry)
	if w.AppliedRegistry != "" {
		fmt.Fprintf(env.Stdout, ", and the %d images of Registry %s, where the applied policy is", w.AppliedImages, w.AppliedRegistry)
	}
	fmt.Fprintln(env.Stdout, ":")
	if len(w.Changes) == 0 {
		fmt.Fprintf(env.Stdout, "no verdict would change (%d unchanged).\n", w.Unchanged)
		return
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tTAGS\tNOW\tWOULD BE\tREASONS\tNOTES")
	for _, c := range w.Changes {
		fmt.Fprintf(tw, "%s@%s\t%s\t%s\t%s\t%s\t%s\n", c.Repository, shortDigest(c.Digest), strings.Join(c.Tags, ","), c.Now, c.WouldBe,
			strings.Join(c.Reasons, ","), strings.Join(c.Notes, "; "))
	}
	_ = tw.Flush()
	fmt.Fprintf(env.Stdout, "%d would change, %d unchanged.\n", len(w.Changes), w.Unchanged)
}

// sameVerification reports whether the applied policy verifies signatures as pol does.
func sameVerification(pol, applied *v1alpha1.RepositoryPolicy) bool {
	return applied != nil && equality.Semantic.DeepEqual(pol.Spec.Verification, applied.Spec.Verification)
}
