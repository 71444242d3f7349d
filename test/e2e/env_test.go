package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

var (
	buildOnce  sync.Once
	managerBin string
	buildErr   error
)

// buildManager builds the manager from cmd/ and its scanner (cmd/portcullis-scanner, beside it, where
// the manager looks for it) once per test process and returns the manager binary.
func buildManager(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "portcullis-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		managerBin = filepath.Join(dir, "manager")
		if out, err := exec.Command("go", "build", "-o", managerBin, "../../cmd").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the manager: %v\n%s", err, out)
			return
		}
		scanner := filepath.Join(dir, "portcullis-scanner")
		if out, err := exec.Command("go", "build", "-o", scanner, "../../cmd/portcullis-scanner").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the scanner: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return managerBin
}

// startControlPlane starts kube-apiserver + etcd with the CRDs and writes an admin kubeconfig into
// dir; both stop when the test ends.
func startControlPlane(t *testing.T, dir string) (*rest.Config, string) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run with `make test` or `make test-e2e`")
	}
	return startEnv(t, dir, &envtest.Environment{CRDDirectoryPaths: []string{"../../config/crd/bases"}, ErrorIfCRDPathMissing: true})
}

// startEnv starts env and writes an admin (system:masters) kubeconfig into dir; both stop when the
// test ends.
func startEnv(t *testing.T, dir string, env *envtest.Environment) (*rest.Config, string) {
	t.Helper()
	ctrllog.SetLogger(logr.Discard()) // envtest logs through controller-runtime; the manager's own log is a file
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	user, err := env.AddUser(envtest.User{Name: "e2e-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, kubeconfig
}

// startManager runs the manager binary with args and KUBECONFIG, logging to logPath; it is killed
// when the test ends, and its log is printed if the test failed.
func startManager(t *testing.T, manager, kubeconfig, logPath string, args ...string) (*exec.Cmd, chan error) {
	t.Helper()
	cmd := exec.Command(manager, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	logs, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("manager log:\n%s", data)
		}
	})
	return cmd, exited
}

func newClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port)
}
