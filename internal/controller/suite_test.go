package controller

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tov1alpha1 "github.com/aquasecurity/trivy-operator/pkg/apis/aquasecurity/v1alpha1"

	"github.com/aquasecurity/trivy/pkg/fanal/analyzer"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/egress"
	"github.com/portcullis-dev/portcullis/internal/scan"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
	"github.com/portcullis-dev/portcullis/internal/scan/trivyscan"
	"github.com/portcullis-dev/portcullis/internal/scan/vulndb"
)

// The envtest suite: a real kube-apiserver + etcd (built by hack/envtest-assets.sh, found through
// KUBEBUILDER_ASSETS), the CRDs from config/crd/bases, and the three controllers running in a manager
// with testOptions.
var (
	k8sClient  client.Client
	testScheme = runtime.NewScheme()
	// suiteCfg reaches the suite's API server as its admin.
	suiteCfg *rest.Config
	// deniedLoopback listens on a 127.0.0.1 port that the suite's egress policy denies.
	deniedLoopback net.Listener
	// testWiring is what SetupAll gave the suite's manager (the admission webhook's hooks).
	testWiring Wiring
)

// testOptions are the manager options of the suite: a host allowlist so that HostNotAllowed and
// InsecureNotAllowed can be exercised (169.254.169.254 and 127.0.0.2 pass it, so that the egress
// policy refuses them at dial time), and an egress policy as cmd/main.go builds it, which allows the
// test registries on 127.0.0.1 and denies the API server (set in runSuite).
var testOptions = Options{
	AllowedRegistryHosts: []string{"127.0.0.1", "localhost", "*.allowed.test", "10.1.2.3:5443", "169.254.169.254", "127.0.0.2"},
	ScanConcurrency:      1,
}

func TestMain(m *testing.M) {
	if os.Getenv(scan.WorkerEnv) != "" {
		// As a scan worker, this binary's trivy also has an analyzer that panics on "panic-me" files.
		analyzer.RegisterAnalyzer(scantest.PanicAnalyzer{})
	}
	trivyscan.RunWorkerIfAsked() // the manager under test scans in a worker: this test binary
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with `make test`, or export KUBEBUILDER_ASSETS=\"$(hack/envtest-assets.sh)\"")
		return 1
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	utilruntime.Must(clientgoscheme.AddToScheme(testScheme))
	utilruntime.Must(v1alpha1.AddToScheme(testScheme))
	utilruntime.Must(tov1alpha1.AddToScheme(testScheme))

	// trivy-operator's CRDs, from its module (the report export writes its kinds).
	toDir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aquasecurity/trivy-operator").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "locating the trivy-operator module:", err)
		return 1
	}
	toCRDs := filepath.Join(strings.TrimSpace(string(toDir)), "deploy", "helm", "crds")
	env := &envtest.Environment{
		CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases"),
			filepath.Join(toCRDs, "aquasecurity.github.io_vulnerabilityreports.yaml"),
			filepath.Join(toCRDs, "aquasecurity.github.io_exposedsecretreports.yaml")},
		ErrorIfCRDPathMissing: true,
		Scheme:                testScheme,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	suiteCfg = cfg
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testScheme,
		NewClient:              countingClient,
		NewCache:               secretGuardedCache,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating manager:", err)
		return 1
	}
	// A vulnerability DB built from the shipped Go vulnerability database, so ImageAttestations are
	// scanned for real.
	work, err := os.MkdirTemp("", "portcullis-suite-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(work)
	if _, err := vulndb.BuildGoOSV(filepath.Join("..", "..", vulndb.ShippedOSV), work); err != nil {
		fmt.Fprintln(os.Stderr, "building the vulnerability DB:", err)
		return 1
	}
	testOptions.VulnDBDir, testOptions.CacheDir = filepath.Join(work, "db"), filepath.Join(work, "cache")
	testOptions.TrivyOperatorReports = true
	direct, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cluster, _, err := ClusterEgressDenials(context.Background(), direct, cfg.Host)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// One loopback port the admin denied (TestEgressRefusals serves on it): reached by a name
	// ("localhost"), it is refused only by the dial-time check on the resolved address.
	if deniedLoopback, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	denied, err := egress.ParseRule(deniedLoopback.Addr().String())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testOptions.Egress = &egress.Policy{Allow: []egress.Rule{{Prefix: netip.MustParsePrefix("127.0.0.1/32")}}, Deny: append(cluster, denied)}
	if testWiring, err = SetupAll(mgr, testOptions); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		fmt.Fprintln(os.Stderr, "cache did not sync")
		return 1
	}
	// A direct (uncached) client, so tests read what the API server holds.
	k8sClient, err = client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating client:", err)
		return 1
	}
	code := m.Run()
	if n := typedSecretReads.Load(); n > 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the manager read Secrets %d times through its cache: a typed Secret informer holds every Secret of the cluster in memory; read them with the APIReader (metadata-only watches are fine)\n", n)
		return 1
	}
	return code
}

// typedSecretReads counts the manager's reads of typed Secrets through its cache (Get, List or an
// informer), which start an informer caching every Secret's data. The suite fails if any happens.
var typedSecretReads atomic.Int64

// secretGuardedCache is the manager's cache as cmd/main.go builds it (NoSecretCache, which refuses
// typed Secret reads), counting the typed Secret reads it refused (typedSecretReads): a refusal
// inside a reconcile might otherwise only show as a retried error.
func secretGuardedCache(cfg *rest.Config, opts crcache.Options) (crcache.Cache, error) {
	c, err := NoSecretCache(nil)(cfg, opts)
	return &secretGuard{Cache: c}, err
}

type secretGuard struct{ crcache.Cache }

func (g *secretGuard) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if typedSecret(obj) {
		typedSecretReads.Add(1)
	}
	return g.Cache.Get(ctx, key, obj, opts...)
}

func (g *secretGuard) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if typedSecret(list) {
		typedSecretReads.Add(1)
	}
	return g.Cache.List(ctx, list, opts...)
}

func (g *secretGuard) GetInformer(ctx context.Context, obj client.Object, opts ...crcache.InformerGetOption) (crcache.Informer, error) {
	if typedSecret(obj) {
		typedSecretReads.Add(1)
	}
	return g.Cache.GetInformer(ctx, obj, opts...)
}

// writes counts the manager's writes to the API server, by namespace ("ns") and, for status writes,
// by object ("ns/name").
var writes sync.Map // string -> *atomic.Int64

func countWrite(key string) {
	n, _ := writes.LoadOrStore(key, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
}

func writeCount(key string) int64 {
	n, ok := writes.Load(key)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// countingClient is the manager's client wrapped to count writes, so tests can assert that a pass
// over an unchanged object sends nothing (a no-op patch would not even change resourceVersion).
func countingClient(cfg *rest.Config, opts client.Options) (client.Client, error) {
	c, err := client.NewWithWatch(cfg, opts) // honours opts.Cache, as the manager's default does
	if err != nil {
		return nil, err
	}
	return interceptor.NewClient(c, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, o ...client.CreateOption) error {
			countWrite(obj.GetNamespace())
			return c.Create(ctx, obj, o...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, o ...client.UpdateOption) error {
			countWrite(obj.GetNamespace())
			return c.Update(ctx, obj, o...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, o ...client.PatchOption) error {
			countWrite(obj.GetNamespace())
			return c.Patch(ctx, obj, p, o...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, o ...client.DeleteOption) error {
			countWrite(obj.GetNamespace())
			return c.Delete(ctx, obj, o...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, o ...client.SubResourcePatchOption) error {
			countWrite(obj.GetNamespace())
			countWrite(obj.GetNamespace() + "/" + obj.GetName())
			return c.SubResource(sub).Patch(ctx, obj, p, o...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, o ...client.SubResourceUpdateOption) error {
			countWrite(obj.GetNamespace())
			countWrite(obj.GetNamespace() + "/" + obj.GetName())
			return c.SubResource(sub).Update(ctx, obj, o...)
		},
	}), nil
}

// statusWritesOf returns how many status writes the manager sent for obj so far.
func statusWritesOf(obj client.Object) int64 {
	return writeCount(obj.GetNamespace() + "/" + obj.GetName())
}

// zapLevel keeps the manager quiet unless PORTCULLIS_TEST_LOG=debug.
func zapLevel() zapcore.Level {
	if os.Getenv("PORTCULLIS_TEST_LOG") == "debug" {
		return -1
	}
	return 2 // error and above
}

// newNamespace creates a namespace for one test, so tests never see each other's objects.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

const (
	eventuallyTimeout = 20 * time.Second
	pollInterval      = 100 * time.Millisecond
)
