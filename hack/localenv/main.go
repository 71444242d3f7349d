// Command localenv runs a local Kubernetes control plane (the real kube-apiserver and etcd, through
// controller-runtime's envtest, found in KUBEBUILDER_ASSETS), installs the Portcullis CRDs, writes a
// kubeconfig to .local/kubeconfig, then runs the command given after `--` (the manager) against it
// until Ctrl-C or the command exits, and stops everything it started.
//
// With -registry it also runs CNCF Distribution on 127.0.0.1:5000 (storage under .local/registry)
// with the demo images (internal/demo); with -samples it applies the samples to the default namespace
// (the Registry pointed at that registry, the policies' key set to the run's signing key), waits for
// the verdicts and prints `kubectl get` and `kubectl describe` of a non-compliant image.
//
// Usage: go run ./hack/localenv [-state .local] [-crds config/crd/bases] [-registry BIN] [-samples DIR] -- bin/manager [flags]
//
// The command gets KUBECONFIG in its environment and `--kubeconfig` is not added, so any program
// that reads KUBECONFIG works. While it runs, `export KUBECONFIG=$PWD/.local/kubeconfig` and kubectl
// reach the control plane.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/portcullis-dev/portcullis/internal/demo"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "localenv:", err)
		os.Exit(1)
	}
}

func run(argv []string) error {
	fs := flag.NewFlagSet("localenv", flag.ContinueOnError)
	state := fs.String("state", ".local", "Folder for the kubeconfig and other local state.")
	crds := fs.String("crds", filepath.Join("config", "crd", "bases"), "Folder of CRD manifests to install.")
	registryBin := fs.String("registry", "", "CNCF Distribution binary to run with seeded images (empty: no registry).")
	registryAddr := fs.String("registry-addr", "127.0.0.1:5000", "Address for the registry (a free port when taken).")
	samples := fs.String("samples", "", "Samples folder to apply to the default namespace once the registry runs.")
	cacheDir := fs.String("cache", filepath.Join(os.TempDir(), "portcullis-demo"), "Folder for the demo's compiled programs and downloaded packages (kept between runs).")
	wait := fs.Duration("wait", 5*time.Minute, "How long to wait for verdicts before printing kubectl get.")
	receiverURL := fs.String("receiver", "http://127.0.0.1:8082", "The manager's push receiver (its --receiver-bind-address): the registry's notifications go there; empty: none.")
	webhooks := fs.String("webhook", "", "ValidatingWebhookConfiguration manifest to register against the command (served by the manager: "+
		"PORTCULLIS_ADMISSION, PORTCULLIS_WEBHOOK_PORT and PORTCULLIS_WEBHOOK_CERT_DIR are set for it); with -samples, the demo then applies one admitted and one refused Deployment.")
	vulnDB := fs.String("vulndb-repository", defaultVulnDB, "trivy's vulnerability DB to give the command instead of its --vulndb-dir when the repository answers (empty: keep --vulndb-dir).")
	if err := fs.Parse(argv); err != nil {
		return err
	}
	args := fs.Args()
	if len(args) == 0 {
		return errors.New("usage: localenv [flags] -- COMMAND [ARGS...]")
	}
	var download bool
	if args, download = chooseVulnDB(context.Background(), args, *vulnDB, func(ctx context.Context, repo string) error {
		return probeRepository(ctx, repo)
	}, os.Stderr); download {
		*wait += 10 * time.Minute // the download comes before the first verdict
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New(`KUBEBUILDER_ASSETS is not set: use "make run", or export KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh)"`)
	}

	ctrllog.SetLogger(logr.Discard()) // envtest logs through controller-runtime; the demo prints its own lines
	start := time.Now()
	fmt.Fprintln(os.Stderr, "localenv: starting kube-apiserver and etcd from", os.Getenv("KUBEBUILDER_ASSETS"))
	env := &envtest.Environment{CRDDirectoryPaths: []string{*crds}, ErrorIfCRDPathMissing: true}
	if *webhooks != "" {
		// envtest issues a serving certificate and points the configuration's clientConfig at
		// https://127.0.0.1:<port><path> with its CA, as the Service and cert-manager do in a cluster.
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{*webhooks}}
	}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "localenv: stopping the control plane")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "localenv: stopping:", err)
		}
	}()

	kubeconfig, err := writeKubeconfig(env, *state)
	if err != nil {
		return err
	}
	defer os.Remove(kubeconfig)
	fmt.Fprintf(os.Stderr, "localenv: control plane up in %s with the CRDs installed\n", time.Since(start).Round(100*time.Millisecond))
	fmt.Fprintf(os.Stderr, "localenv: export KUBECONFIG=%s   # then: kubectl get registries,repositorypolicies,imageattestations -A\n", kubeconfig)

	var childEnv []string
	if *webhooks != "" {
		wo := env.WebhookInstallOptions
		childEnv = []string{"PORTCULLIS_ADMISSION=true", fmt.Sprintf("PORTCULLIS_WEBHOOK_PORT=%d", wo.LocalServingPort),
			"PORTCULLIS_WEBHOOK_CERT_DIR=" + wo.LocalServingCertDir}
		fmt.Fprintf(os.Stderr, "localenv: admission webhook registered at https://%s:%d (namespaces labelled registry.portcullis.dev/admission=enabled)\n",
			wo.LocalServingHost, wo.LocalServingPort)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *registryBin != "" {
		c, err := client.New(cfg, client.Options{})
		if err != nil {
			return err
		}
		var notify *registrytest.NotifyEndpoint
		if *samples != "" && *receiverURL != "" {
			// The registry notifies the manager's receiver on every push (a forwarder stands in for
			// the Service in front of it): docs/registries.md, "Verdicts at push time".
			forward, stopForward, err := demo.StartForwarder(c, "default", "local", *receiverURL)
			if err != nil {
				return err
			}
			defer stopForward()
			notify = &registrytest.NotifyEndpoint{URL: forward, Token: demo.ReceiverToken}
		}
		dist, seeded, stopRegistry, err := startRegistry(*registryBin, *registryAddr, filepath.Join(*state, "registry"), *cacheDir, notify)
		if err != nil {
			return err
		}
		defer stopRegistry()
		if *samples != "" {
			if err := demo.ApplySamples(ctx, c, *samples, "default", dist.URL, seeded.PublicKeyPEM); err != nil {
				return err
			}
			if notify != nil {
				if err := demo.EnableNotifications(ctx, c, "default", "local"); err != nil {
					return err
				}
			}
			var admit []demo.Deployment
			if *webhooks != "" {
				if admit, err = demo.AdmissionDeployments(dist.Host, seeded); err != nil {
					return err
				}
			}
			go func() {
				if !showVerdicts(ctx, c, kubeconfig, "default", *wait) {
					return
				}
				if len(admit) > 0 {
					showAdmission(ctx, c, kubeconfig, *state, admit)
				}
				if notify != nil {
					showPushReceiver(ctx, c, dist)
				}
			}()
		}
	}
	logPath, err := filepath.Abs(filepath.Join(*state, filepath.Base(args[0])+".log"))
	if err != nil {
		return err
	}
	return runChild(ctx, args, append([]string{"KUBECONFIG=" + kubeconfig}, childEnv...), logPath)
}

// writeKubeconfig writes an admin kubeconfig for the control plane into dir and returns its path.
func writeKubeconfig(env *envtest.Environment, dir string) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "portcullis-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("creating an admin user: %w", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("rendering the kubeconfig: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path, err := filepath.Abs(filepath.Join(dir, "kubeconfig"))
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, data, 0o600)
}

// runChild runs the command with env (KUBECONFIG and more) added to its environment until it exits
// or ctx ends; then it sends SIGTERM and,
// after 10 s, SIGKILL. Its output (the manager's JSON logs) goes to logPath, not between the demo's
// own lines; when it exits with an error, the end of that log is printed.
func runChild(ctx context.Context, args []string, env []string, logPath string) error {
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer logFile.Close()
	fmt.Fprintf(os.Stderr, "localenv: %s logs to %s (tail -f it to follow)\n", filepath.Base(args[0]), logPath)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", args[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "localenv: the end of %s:\n%s", logPath, logTail(logPath, 20))
			return fmt.Errorf("%s exited: %w", args[0], err)
		}
		return nil
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "localenv: stopping", args[0])
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		return nil
	}
}

// logTail is the last n lines of the file at path ("" when it cannot be read).
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
