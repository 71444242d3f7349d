// Command manager runs the Portcullis controllers: Registry, RepositoryPolicy and ImageAttestation.
// Flags -> options -> wiring; nothing else lives here.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	tov1alpha1 "github.com/aquasecurity/trivy-operator/pkg/apis/aquasecurity/v1alpha1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/admission"
	"github.com/portcullis-dev/portcullis/internal/controller"
	"github.com/portcullis-dev/portcullis/internal/egress"
	"github.com/portcullis-dev/portcullis/internal/receiver"
	"github.com/portcullis-dev/portcullis/internal/reports"
)

// defaultGCPercent is the manager's Go GC target unless GOGC is set: the heap may grow to 1.5 times
// the live heap between collections instead of twice, which keeps the manager at 10,000
// ImageAttestations under 256 MiB resident while it lists (docs/performance.md) for a few percent
// more CPU.
const defaultGCPercent = 50

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// flags are the manager's command-line settings.
type flags struct {
	metricsAddr, probeAddr string
	secureMetrics          bool
	enableHTTP2            bool
	leaderElect            bool
	leaderElectionNS       string
	allowedHosts           string
	allowInsecure          bool
	scanConcurrency        int
	cacheDir               string
	vulnDBDir              string
	maxImageSize           int64
	trivyOperatorReports   bool
	policyReports          string
	policyReportMax        int
	scannerBinary          string
	scannerSocket          string
	scanInProcess          bool // deprecated, ignored
	vulnDBRepositories     string
	vulnDBRefresh          time.Duration
	watchNamespaces        string
	vulnDBInsecure         bool
	verdictConcurrency     int
	kubeAPIQPS             float64
	kubeAPIBurst           int
	pprofAddr              string
	admission              bool
	admissionRefuse        bool
	admissionResolve       time.Duration
	receiverAddr           string
	admissionExempt        string
	egressAllow            string
	egressDeny             string
	webhookPort            int
	webhookCertDir         string
}

// envPrefix: every flag can also be given as an environment variable, PORTCULLIS_ and the flag's
// name in upper case with "_" for "-" (e.g. PORTCULLIS_ALLOWED_REGISTRY_HOSTS), so installs that can
// set env but not arguments (an OLM Subscription's spec.config.env) configure the manager too. A flag
// on the command line wins over the environment.
const envPrefix = "PORTCULLIS_"

// envName is the environment variable for flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func parseFlags(fs *flag.FlagSet, args []string) (flags, zap.Options, error) {
	var f flags
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", "0",
		"Address of the metrics endpoint, e.g. :8443 (https) or :8080 (http with --metrics-secure=false); 0 disables it.")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	fs.BoolVar(&f.secureMetrics, "metrics-secure", true,
		"Serve metrics over https, and only to clients allowed by TokenReview and SubjectAccessReview.")
	fs.BoolVar(&f.enableHTTP2, "enable-http2", false,
		"Allow HTTP/2 on the metrics server (off by default: HTTP/2 Rapid Reset, CVE-2023-44487).")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles.")
	fs.StringVar(&f.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election Lease (default: the pod's).")
	fs.StringVar(&f.allowedHosts, "allowed-registry-hosts", "",
		"Comma-separated doublestar patterns of registry hosts (host or host:port) a Registry may use, e.g. '*.corp.example,registry.internal:5000'. Empty allows all.")
	fs.StringVar(&f.egressAllow, "egress-allow", "",
		"Comma-separated addresses the manager may connect to for a Registry although the egress policy denies them by default (loopback, link-local and cloud metadata, the cluster's Service range, the API server): CIDR networks, addresses, or address:port, e.g. '127.0.0.1:5000' for a local registry. The most specific entry wins (docs/security.md#egress).")
	fs.StringVar(&f.egressDeny, "egress-deny", "",
		"Comma-separated CIDR networks, addresses or address:port that no Registry may reach besides the default denials, e.g. the cluster's Pod range '10.244.0.0/16' (the Service range is read from the ServiceCIDR API).")
	fs.BoolVar(&f.allowInsecure, "allow-insecure-registries", false,
		"Allow plain http to non-loopback registries (loopback is always allowed with spec.insecure).")
	fs.IntVar(&f.scanConcurrency, "scan-concurrency", 2, "How many digests are scanned at once (>= 1).")
	fs.IntVar(&f.verdictConcurrency, "verdict-concurrency", 16,
		"How many ImageAttestations are worked on at once: verification and verdicts, with at most --scan-concurrency of them scanning (>= 1).")
	fs.Float64Var(&f.kubeAPIQPS, "kube-api-qps", 100, "Requests per second the manager may send to the Kubernetes API server (client-side limit; the server's API Priority and Fairness applies too).")
	fs.IntVar(&f.kubeAPIBurst, "kube-api-burst", 200, "Burst above --kube-api-qps.")
	fs.StringVar(&f.pprofAddr, "pprof-bind-address", "0",
		"Address of Go's /debug/pprof endpoints for profiling memory and CPU, e.g. 127.0.0.1:6060; 0 disables them. Bind it to loopback only.")
	fs.StringVar(&f.cacheDir, "cache-dir", "/var/cache/portcullis", "Folder for the scan caches.")
	fs.Int64Var(&f.maxImageSize, "max-image-size", 10<<30, "Largest image scanned, in bytes, compressed or uncompressed (decompression bombs are refused).")
	fs.BoolVar(&f.scanInProcess, "scan-in-process", false,
		"Deprecated and ignored: the manager no longer links trivy; scans always run in portcullis-scanner (see --scanner-binary).")
	fs.StringVar(&f.scannerBinary, "scanner-binary", "",
		"Path of the portcullis-scanner binary, the scan worker that links trivy (scans and DB downloads run in it, never in the manager). Empty: portcullis-scanner beside this executable, else on PATH.")
	fs.StringVar(&f.scannerSocket, "scanner-socket", "",
		"Unix socket of a portcullis-scanner started on its own with --listen (the scanner container of config/manager, which has no ServiceAccount token and its own resource limits) instead of a child process; --scanner-binary is then unused. DB and cache paths are the scanner's.")
	fs.BoolVar(&f.trivyOperatorReports, "trivy-operator-reports", false,
		"Also write trivy-operator VulnerabilityReport and ExposedSecretReport objects (its CRDs must be installed).")
	fs.StringVar(&f.policyReports, "policy-reports", "",
		"Also write the verdicts as PolicyReports, one per Registry in its namespace (docs/reports.md): openreports (openreports.io/v1alpha1 Report), wgpolicyk8s (wgpolicyk8s.io/v1alpha2 PolicyReport, for Policy Reporter before v3), or both, comma-separated. The CRDs must be installed. Empty: none.")
	fs.IntVar(&f.policyReportMax, "policy-report-max-results", reports.DefaultMaxResults,
		"Most results one PolicyReport holds (failures first; the summary counts all).")
	fs.StringVar(&f.vulnDBDir, "vulndb-dir", "",
		"Folder with trivy.db and metadata.json (see portcullis-vulndb), used as is. Empty: download from --vulndb-repository.")
	fs.StringVar(&f.vulnDBRepositories, "vulndb-repository", "",
		"Comma-separated OCI repositories of trivy's vulnerability DB (e.g. mirror.gcr.io/aquasec/trivy-db:2 or a mirror), downloaded into --cache-dir/db and refreshed. Empty with no --vulndb-dir: scanning is off.")
	fs.DurationVar(&f.vulnDBRefresh, "vulndb-refresh", 12*time.Hour, "How often a downloaded vulnerability DB is checked for an update.")
	fs.BoolVar(&f.vulnDBInsecure, "vulndb-insecure", false, "Allow plain http to the --vulndb-repository mirror.")
	fs.StringVar(&f.watchNamespaces, "watch-namespaces", os.Getenv("WATCH_NAMESPACE"),
		"Comma-separated namespaces to watch; empty watches all. Defaults to $WATCH_NAMESPACE, which the Deployment fills from OLM's olm.targetNamespaces (OwnNamespace install mode).")
	fs.BoolVar(&f.admission, "admission", false,
		"Serve the validating admission webhook for images (path "+admission.Path+" on --webhook-port; docs/admission.md). Needs a serving certificate in --webhook-cert-dir.")
	fs.BoolVar(&f.admissionRefuse, "admission-refuse-uncovered", false,
		"Refuse images whose registry host no Registry covers (default: admit them).")
	fs.StringVar(&f.receiverAddr, "receiver-bind-address", "0",
		"Address of the push receiver (registry notifications for Registries with spec.notifications), e.g. :8082; 0 turns it off. Plain HTTP: put TLS in front (an Ingress) when the registry is outside the cluster.")
	fs.DurationVar(&f.admissionResolve, "admission-resolve-timeout", admission.DefaultResolveTimeout,
		"Bound of the one registry request that resolves a tag the inventory does not know yet, at admission.")
	fs.StringVar(&f.admissionExempt, "admission-exempt-namespaces", os.Getenv("POD_NAMESPACE"),
		"Comma-separated namespaces the webhook never judges, besides kube-system. Defaults to $POD_NAMESPACE (the manager's own).")
	fs.IntVar(&f.webhookPort, "webhook-port", 9443, "Port of the admission webhook server (https).")
	fs.StringVar(&f.webhookCertDir, "webhook-cert-dir", "",
		"Folder with tls.crt and tls.key for the webhook server (default: controller-runtime's /tmp/k8s-webhook-server/serving-certs).")
	var zo zap.Options
	zo.BindFlags(fs)
	var envErr error
	fs.VisitAll(func(fl *flag.Flag) {
		if v, ok := os.LookupEnv(envName(fl.Name)); ok && envErr == nil {
			if err := fl.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q (for --%s): %w", envName(fl.Name), v, fl.Name, err)
			}
		}
	})
	if envErr != nil {
		return f, zo, envErr
	}
	if err := fs.Parse(args); err != nil {
		return f, zo, err
	}
	if f.scanConcurrency < 1 {
		return f, zo, fmt.Errorf("--scan-concurrency must be at least 1, got %d", f.scanConcurrency)
	}
	if f.verdictConcurrency < 1 {
		return f, zo, fmt.Errorf("--verdict-concurrency must be at least 1, got %d", f.verdictConcurrency)
	}
	if f.admissionResolve <= 0 || f.admissionResolve > 10*time.Second {
		return f, zo, fmt.Errorf("--admission-resolve-timeout must be above 0 and at most 10s (the webhook's own timeout), got %s", f.admissionResolve)
	}
	if f.kubeAPIQPS <= 0 || f.kubeAPIBurst < 1 {
		return f, zo, fmt.Errorf("--kube-api-qps must be above 0 and --kube-api-burst at least 1, got %v and %d", f.kubeAPIQPS, f.kubeAPIBurst)
	}
	return f, zo, nil
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (f flags) options() controller.Options {
	return controller.Options{
		AllowedRegistryHosts:    splitList(f.allowedHosts),
		AllowInsecureRegistries: f.allowInsecure,
		ScanConcurrency:         f.scanConcurrency,
		VerdictConcurrency:      f.verdictConcurrency,
		CacheDir:                f.cacheDir,
		VulnDBDir:               f.vulnDBDir,
		MaxImageSize:            f.maxImageSize,
		TrivyOperatorReports:    f.trivyOperatorReports,
		VulnDBRepositories:      splitList(f.vulnDBRepositories),
		VulnDBRefresh:           f.vulnDBRefresh,
		VulnDBInsecure:          f.vulnDBInsecure,
	}
}

// cacheOptions restricts the manager's cache (every watch) to namespaces; none means all.
// Every cached object is stored without its managedFields, which the manager never reads (about a
// third of an ImageAttestation's size in memory).
func cacheOptions(namespaces []string) cache.Options {
	o := cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
	if len(namespaces) == 0 {
		return o
	}
	o.DefaultNamespaces = map[string]cache.Config{}
	for _, ns := range namespaces {
		o.DefaultNamespaces[ns] = cache.Config{}
	}
	return o
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	utilruntime.Must(tov1alpha1.AddToScheme(s)) // trivy-operator report export
	return s
}

func run() error {
	f, zo, err := parseFlags(flag.CommandLine, os.Args[1:])
	if err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zo)))
	log := ctrl.Log.WithName("setup")
	if f.scanInProcess {
		log.Info("--scan-in-process is deprecated and ignored: scans run in the portcullis-scanner process")
	}

	var tlsOpts []func(*tls.Config)
	if !f.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: f.metricsAddr, SecureServing: f.secureMetrics, TLSOpts: tlsOpts}
	if f.secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	restCfg := ctrl.GetConfigOrDie()
	restCfg.QPS, restCfg.Burst = float32(f.kubeAPIQPS), f.kubeAPIBurst
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  newScheme(),
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  f.probeAddr,
		LeaderElection:          f.leaderElect,
		LeaderElectionID:        "portcullis.registry.portcullis.dev",
		LeaderElectionNamespace: f.leaderElectionNS,
		Cache:                   cacheOptions(splitList(f.watchNamespaces)),
		NewCache:                controller.NoSecretCache(nil), // Secrets are read uncached, never held in memory
		PprofBindAddress:        f.pprofAddr,
		WebhookServer:           webhook.NewServer(webhook.Options{Port: f.webhookPort, CertDir: f.webhookCertDir, TLSOpts: tlsOpts}),
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	opts := f.options()
	if opts.Egress, err = egressPolicy(f, mgr.GetAPIReader(), restCfg.Host); err != nil {
		return err
	}
	log.Info("egress policy", "allow", opts.Egress.Allow, "deny", opts.Egress.Deny)
	if f.scannerSocket != "" {
		opts.ScannerAddress = f.scannerSocket
	} else if opts.VulnDBDir != "" || len(opts.VulnDBRepositories) > 0 {
		bin, err := scannerBinary(f.scannerBinary)
		if err != nil {
			return err
		}
		opts.ScannerCommand = []string{bin}
	}
	wiring, err := controller.SetupAll(mgr, opts)
	if err != nil {
		return err
	}
	if f.admission {
		err := admission.Setup(mgr, admission.Options{Settings: admission.Settings{RefuseUncovered: f.admissionRefuse},
			Resolve: wiring.ResolveTag, ResolveTimeout: f.admissionResolve, Evaluate: wiring.Evaluate, Exempt: splitList(f.admissionExempt)})
		if err != nil {
			return fmt.Errorf("setting up the admission webhook: %w", err)
		}
	}
	if formats, err := reports.ParseFormats(f.policyReports); err != nil {
		return err
	} else if len(formats) > 0 {
		r := &reports.Reconciler{Client: mgr.GetClient(), Formats: formats, MaxResults: f.policyReportMax}
		if err := r.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up PolicyReports: %w", err)
		}
	}
	if f.receiverAddr != "0" && f.receiverAddr != "" {
		reader := mgr.GetClient()
		srv := &receiver.Server{Addr: f.receiverAddr, Handler: &receiver.Handler{Target: wiring.Receiver},
			Get: func(ctx context.Context, key types.NamespacedName) (*v1alpha1.Registry, error) {
				reg := &v1alpha1.Registry{}
				return reg, reader.Get(ctx, key, reg)
			}}
		if err := mgr.Add(srv); err != nil {
			return err
		}
		if err := mgr.Add(wiring.ReceiverStatus); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding ready check: %w", err)
	}
	log.Info("starting manager", "metricsAddr", f.metricsAddr, "allowedRegistryHosts", f.allowedHosts, "scanConcurrency", f.scanConcurrency,
		"watchNamespaces", f.watchNamespaces, "admission", f.admission)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// scannerName is the scanner binary's file name (cmd/portcullis-scanner).
const scannerName = "portcullis-scanner"

// scannerBinary locates the scanner: the flag's path when set, else portcullis-scanner beside this
// executable (as the image and `make build` place it), else on PATH.
func scannerBinary(flagValue string) (string, error) {
	if flagValue != "" {
		if _, err := os.Stat(flagValue); err != nil {
			return "", fmt.Errorf("--scanner-binary: %w", err)
		}
		return flagValue, nil
	}
	if exe, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(exe), scannerName)
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	if p, err := exec.LookPath(scannerName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("scanning is on (--vulndb-dir or --vulndb-repository) but no %s binary was found beside the manager or on PATH: build it (make build) or set --scanner-binary", scannerName)
}

// egressPolicy is the manager's egress policy: the flags' entries, and the cluster's own addresses
// (controller.ClusterEgressDenials) denied.
func egressPolicy(f flags, reader client.Reader, apiServer string) (*egress.Policy, error) {
	p, err := egress.Parse(splitList(f.egressAllow), splitList(f.egressDeny))
	if err != nil {
		return nil, fmt.Errorf("--egress-allow/--egress-deny: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster, note, err := controller.ClusterEgressDenials(ctx, reader, apiServer)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's addresses for the egress policy: %w", err)
	}
	if note != "" {
		ctrl.Log.WithName("setup").Info("egress policy: " + note)
	}
	p.Deny = append(p.Deny, cluster...)
	return p, nil
}
