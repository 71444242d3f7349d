// Package cli is the `portcullis` command-line tool (also `kubectl portcullis`): compliance reports
// and what-if evaluations of RepositoryPolicies against a cluster's inventory. It reads the cluster
// (ImageAttestations, Registries, RepositoryPolicies; for a retention preview also Pods, workloads and
// the Registry's Secrets when asked) and the registry (retention preview: GET and HEAD only), and
// never writes to either; verdicts come from the same internal/policy code as the manager's, retention
// plans from the same internal/retention listing and planner.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Exit codes (documented in docs/cli.md).
const (
	// ExitOK: the command did what was asked; for what-if, no image would change verdict.
	ExitOK = 0
	// ExitChanges: what-if found images whose verdict would change, or digests whose deletion would.
	ExitChanges = 1
	// ExitError: bad usage or input, or the cluster or the registry could not be read.
	ExitError = 2
)

// Env is what a run needs from outside: output streams, the cluster and the clock.
type Env struct {
	Stdout, Stderr io.Writer
	// Client returns a client of the cluster of kubeconfig and context (empty: the defaults, as
	// kubectl's). Nil: from kubeconfig files (NewClient).
	Client func(kubeconfig, context string) (client.Reader, error)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

const usage = `portcullis: compliance reports and what-if evaluations of Portcullis policies.

Usage:
  portcullis report  [-n NAMESPACE] [-o markdown|csv|json|html] [--kubeconfig FILE] [--context NAME]
  portcullis what-if -f POLICY.yaml [-n NAMESPACE] [-o text|json] [--registry-auth keychain|secret|anonymous]
                     [--skip-retention] [--kubeconfig FILE] [--context NAME]

Also installed as kubectl-portcullis, so "kubectl portcullis report" works.
"portcullis COMMAND --help" describes a command. Exit codes: 0 done (what-if: no verdict would change),
1 what-if: some verdicts or retention deletions would change, 2 bad usage or input, or the cluster or
the registry could not be read.
`

// Run runs the command line args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Client == nil {
		env.Client = NewClient
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return ExitError
	}
	var err error
	code := ExitOK
	switch args[0] {
	case "report":
		err = runReport(ctx, args[1:], env)
	case "what-if":
		code, err = runWhatIf(ctx, args[1:], env)
	case "help", "-h", "--help":
		fmt.Fprint(env.Stdout, usage)
		return ExitOK
	default:
		fmt.Fprintf(env.Stderr, "portcullis: unknown command %q\n\n%s", args[0], usage)
		return ExitError
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, new(parseError)):
		return ExitError // the flag package printed it, with the usage
	case err != nil:
		fmt.Fprintln(env.Stderr, "portcullis:", err)
		return ExitError
	}
	return code
}

// common are the flags every command has.
type common struct {
	namespace, kubeconfig, context string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.namespace, "n", "", "Namespace (default: all namespaces for report; the policy's, else default, for what-if).")
	fs.StringVar(&c.namespace, "namespace", "", "Same as -n.")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "Path of the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, as kubectl).")
	fs.StringVar(&c.context, "context", "", "The kubeconfig context to use (default: its current context).")
}

// NewClient is a read-only client of the cluster of kubeconfig and context, with Portcullis's kinds.
func NewClient(kubeconfig, kubeContext string) (client.Reader, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	cfg.UserAgent = "portcullis-cli"
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s)) // Secrets, Pods and workloads (retention preview)
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return client.New(cfg, client.Options{Scheme: s})
}

// pageSize is how many ImageAttestations one list request reads.
const pageSize = 500

// listImages lists the ImageAttestations of namespace (all when empty) page by page, printing
// progress to progress when there is more than one page.
func listImages(ctx context.Context, c client.Reader, namespace string, progress io.Writer) ([]v1alpha1.ImageAttestation, error) {
	var all []v1alpha1.ImageAttestation
	cont := ""
	for {
		page := &v1alpha1.ImageAttestationList{}
		opts := []client.ListOption{client.Limit(pageSize), client.Continue(cont)}
		if namespace != "" {
			opts = append(opts, client.InNamespace(namespace))
		}
		if err := c.List(ctx, page, opts...); err != nil {
			return nil, fmt.Errorf("listing ImageAttestations: %w", err)
		}
		all = append(all, page.Items...)
		cont = page.Continue
		if cont == "" {
			if len(all) > pageSize {
				fmt.Fprintf(progress, "portcullis: read %d ImageAttestations\n", len(all))
			}
			return all, nil
		}
		fmt.Fprintf(progress, "portcullis: read %d ImageAttestations...\n", len(all))
	}
}
