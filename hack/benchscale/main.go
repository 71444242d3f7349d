// Command benchscale is the scale benchmark of Portcullis (`make bench-scale`, never run in CI). It
// starts a real kube-apiserver and etcd (controller-runtime envtest, KUBEBUILDER_ASSETS) with the
// CRDs, a CNCF Distribution registry seeded with -n images over -repos repositories, a counting
// reverse proxy in front of the registry, and the manager binary as a child process; then it creates
// one Registry (pointed at the proxy) and one RepositoryPolicy (a key nobody signed with, so every
// image is SignatureMissing, and a scan threshold) and measures:
//
//   - the first pass: time to the first verdict and to all N verdicts (ImageAttestations whose
//     PolicyCompliant condition is True or False), images per second, registry requests per image by
//     kind, scans and API writes;
//   - -steady intervals of steady state: registry requests per tag, scans, blob downloads and API
//     writes per interval. An interval runs from one complete listing to the next, as the manager
//     reports them in portcullis_registry_last_listing_timestamp_seconds (status.lastSyncTime is
//     written only when a listing changes something, so it does not advance in steady state);
//   - the resident memory (VmRSS) of the manager and, separately, of its child processes (the scan
//     worker), at the end of the first pass, at the end, and the peak seen while polling.
//
// Verdicts are counted from a watch on ImageAttestations (a paged list of 500 per page to start and
// after a broken watch, then events), so the harness costs the API server one watcher, not a list of
// every object every poll; the manager's /metrics is read every 2 s.
//
// It prints one Markdown table (and writes it to -out). Everything listens on 127.0.0.1 only. The
// whole run is bounded by -timeout: on timeout (or Ctrl-C) it prints what was measured so far and
// exits 1. The manager (SIGTERM, then SIGKILL after 10 s), the proxy, the registry and the control
// plane are stopped on every exit path.
//
// Usage:
//
//	KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh)" go run ./hack/benchscale -n 5000 -repos 50 \
//	    -registry BIN -manager bin/manager -vulndb .local/vulndb/db [-interval 3m] [-steady 2] \
//	    [-tiny] [-timeout 90m] [-out FILE] -- [manager flags]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// options are the harness's flags.
type options struct {
	n, repos    int
	interval    time.Duration
	steady      int
	registryBin string
	manager     string
	vulndb      string
	tiny        bool
	push        bool
	timeout     time.Duration
	out         string
	crds        string
	managerArgs []string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(1)
	}
}

func parseOptions(argv []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("benchscale", flag.ContinueOnError)
	fs.IntVar(&o.n, "n", 5000, "Number of images (distinct digests, one tag each).")
	fs.IntVar(&o.repos, "repos", 50, "Number of repositories (bench/repo-NN) the images are spread over.")
	fs.DurationVar(&o.interval, "interval", 3*time.Minute, "The Registry's spec.interval (at least 30s).")
	fs.IntVar(&o.steady, "steady", 2, "Steady-state intervals to measure after the first pass.")
	fs.StringVar(&o.registryBin, "registry", "", "CNCF Distribution binary (required).")
	fs.StringVar(&o.manager, "manager", "bin/manager", "Manager binary.")
	fs.StringVar(&o.vulndb, "vulndb", "", "Folder with trivy.db and metadata.json for --vulndb-dir (required).")
	fs.BoolVar(&o.tiny, "tiny", false, "Config-only images without layers (default on when -n >= 50000).")
	fs.BoolVar(&o.push, "push", false, "Seed by pushing every image through the registry API (about 1,500 images a minute here) instead of\n"+
		"writing them into its storage folder in Distribution's own layout (the default; seconds per 10,000 images).")
	fs.DurationVar(&o.timeout, "timeout", 90*time.Minute, "Bound of the whole run; on timeout the partial table is printed and the exit status is 1.")
	fs.StringVar(&o.out, "out", "", "Also write the table to this file.")
	fs.StringVar(&o.crds, "crds", filepath.Join("config", "crd", "bases"), "Folders or files of CRD manifests, comma-separated (e.g. add OpenReports' CRD to measure --policy-reports).")
	if err := fs.Parse(argv); err != nil {
		return o, err
	}
	tinySet := false
	fs.Visit(func(f *flag.Flag) { tinySet = tinySet || f.Name == "tiny" })
	if !tinySet {
		o.tiny = o.n >= 50000
	}
	o.managerArgs = fs.Args()
	switch {
	case o.n < 1 || o.repos < 1:
		return o, errors.New("-n and -repos must be at least 1")
	case o.interval < 30*time.Second:
		return o, errors.New("-interval must be at least 30s (the Registry's minimum)")
	case o.steady < 0:
		return o, errors.New("-steady must not be negative")
	case o.registryBin == "" || o.vulndb == "":
		return o, errors.New("-registry and -vulndb are required (use `make bench-scale`)")
	case os.Getenv("KUBEBUILDER_ASSETS") == "":
		return o, errors.New(`KUBEBUILDER_ASSETS is not set: use "make bench-scale", or export KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh)"`)
	}
	for _, p := range []*string{&o.manager, &o.vulndb, &o.registryBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return o, err
		}
		*p = abs
	}
	if _, err := os.Stat(filepath.Join(o.vulndb, "trivy.db")); err != nil {
		return o, fmt.Errorf("-vulndb: %w", err)
	}
	return o, nil
}

func run(argv []string) (err error) {
	o, err := parseOptions(argv)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	work, err := os.MkdirTemp("", "benchscale-")
	if err != nil {
		return err
	}
	logf("work folder %s (logs are kept there; the registry storage and caches are removed at exit)", work)
	defer func() {
		for _, d := range []string{filepath.Join(work, "registry", "data"), filepath.Join(work, "cache")} {
			_ = os.RemoveAll(d)
		}
	}()

	// 1. The control plane.
	start := time.Now()
	cp, err := startControlPlane(o.crds, work)
	if err != nil {
		return err
	}
	defer cp.stop()
	logf("control plane up in %s; export KUBECONFIG=%s", since(start), cp.kubeconfig)

	// 2. The registry, seeded.
	regDir := filepath.Join(work, "registry")
	if err := os.MkdirAll(regDir, 0o700); err != nil {
		return err
	}
	dist, stopRegistry, err := registrytest.Start(o.registryBin, registrytest.Options{Dir: regDir})
	if err != nil {
		return err
	}
	defer stopRegistry()
	start = time.Now()
	logf("seeding %d %s images over %d repositories into %s", o.n, map[bool]string{true: "tiny (config-only)", false: "two-layer"}[o.tiny], o.repos, dist.URL)
	image, err := images(o.tiny)
	if err != nil {
		return err
	}
	if o.push {
		err = seed(ctx, dist.Host, o.n, o.repos, image)
	} else {
		err = seedFiles(ctx, filepath.Join(regDir, "data"), o.n, o.repos, image)
	}
	if err != nil {
		return fmt.Errorf("seeding: %w", err)
	}
	seedTime := time.Since(start)
	logf("seeded %d images in %s (%.0f images/s); not part of the table", o.n, seedTime.Round(100*time.Millisecond), float64(o.n)/seedTime.Seconds())

	// 3. The counting proxy.
	px, err := startProxy(dist.Host)
	if err != nil {
		return err
	}
	defer px.close()
	logf("counting proxy %s -> %s", px.url, dist.URL)

	// 5. The manager (4, the objects, after it is ready).
	mgr, err := startManager(ctx, o, cp.kubeconfig, work)
	if err != nil {
		return err
	}
	defer mgr.stop()
	logf("manager pid %d, log %s", mgr.pid(), mgr.logPath)
	if err := mgr.waitReady(ctx, 3*time.Minute); err != nil {
		return err
	}
	logf("manager ready")

	// 6. Measure.
	b := &bench{o: o, c: cp.client, proxy: px, mgr: mgr, res: &results{}}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch() // before the control plane stops
	if err := b.startWatch(watchCtx); err != nil {
		return err
	}
	measureErr := b.measure(ctx)
	stopWatch()
	// 7. Report, complete or not.
	table := b.res.table(o, measureErr)
	fmt.Println()
	fmt.Print(table)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err == nil {
			err = os.WriteFile(o.out, []byte(table), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchscale: writing -out:", err)
		} else {
			logf("table written to %s", o.out)
		}
	}
	logf("manager log: %s", mgr.logPath)
	if measureErr != nil {
		return measureErr
	}
	return nil
}

// logf prints a progress line to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchscale: "+format+"\n", args...)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// joinArgs renders the manager's extra flags for the table.
func joinArgs(args []string) string {
	if len(args) == 0 {
		return "(none)"
	}
	return "`" + strings.Join(args, " ") + "`"
}

// controlPlane is envtest's kube-apiserver and etcd, a client and a kubeconfig for the manager.
type controlPlane struct {
	env        *envtest.Environment
	client     client.WithWatch
	kubeconfig string
}

// startControlPlane starts kube-apiserver and etcd with the CRDs of crds installed, and writes an
// admin kubeconfig into dir. etcd gets an 8 GiB quota: 100,000 ImageAttestations written a few times
// each outgrow the 2 GiB default before compaction frees space.
func startControlPlane(crds, dir string) (*controlPlane, error) {
	logf("starting kube-apiserver and etcd from %s", os.Getenv("KUBEBUILDER_ASSETS"))
	env := &envtest.Environment{CRDDirectoryPaths: strings.Split(crds, ","), ErrorIfCRDPathMissing: true}
	env.ControlPlane.Etcd = &envtest.Etcd{}
	env.ControlPlane.Etcd.Configure().Set("quota-backend-bytes", strconv.FormatInt(8<<30, 10))
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	cp := &controlPlane{env: env}
	fail := func(err error) (*controlPlane, error) { cp.stop(); return nil, err }
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fail(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return fail(err)
	}
	if cp.client, err = client.NewWithWatch(cfg, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	user, err := env.AddUser(envtest.User{Name: "portcullis-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fail(fmt.Errorf("creating an admin user: %w", err))
	}
	data, err := user.KubeConfig()
	if err != nil {
		return fail(fmt.Errorf("rendering the kubeconfig: %w", err))
	}
	cp.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.kubeconfig, data, 0o600); err != nil {
		return fail(err)
	}
	return cp, nil
}

func (cp *controlPlane) stop() {
	logf("stopping the control plane")
	if err := cp.env.Stop(); err != nil {
		logf("stopping the control plane: %v", err)
	}
}

// managerProc is the manager running as a child process in its own process group (so a Ctrl-C in the
// terminal reaches the harness, which stops the manager in order).
type managerProc struct {
	cmd                    *exec.Cmd
	done                   chan struct{}
	err                    error // set before done is closed
	logPath                string
	log                    *os.File
	metricsURL, readyzURL  string
	metricsAddr, probeAddr string
}

// startManager runs o.manager with KUBECONFIG, loopback metrics and probes on free ports, a cache in
// dir, the vulnerability DB folder, and o.managerArgs; stdout and stderr go to dir/manager.log.
func startManager(ctx context.Context, o options, kubeconfig, dir string) (*managerProc, error) {
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	probeAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	m := &managerProc{
		done: make(chan struct{}), logPath: filepath.Join(dir, "manager.log"),
		metricsAddr: metricsAddr, probeAddr: probeAddr,
		metricsURL: "http://" + metricsAddr + "/metrics", readyzURL: "http://" + probeAddr + "/readyz",
	}
	if m.log, err = os.Create(m.logPath); err != nil {
		return nil, err
	}
	args := append([]string{
		"--metrics-bind-address=" + metricsAddr,
		"--health-probe-bind-address=" + probeAddr,
		"--metrics-secure=false",
		"--cache-dir=" + filepath.Join(dir, "cache"),
		"--vulndb-dir=" + o.vulndb,
		"--egress-allow=127.0.0.1", // the registry's counting proxy is on loopback
	}, o.managerArgs...)
	m.cmd = exec.Command(o.manager, args...)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	m.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		_ = m.log.Close()
		return nil, fmt.Errorf("starting %s: %w", o.manager, err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.done)
	}()
	return m, nil
}

func (m *managerProc) pid() int { return m.cmd.Process.Pid }

// exited returns an error when the manager has exited, nil while it runs.
func (m *managerProc) exited() error {
	select {
	case <-m.done:
		return fmt.Errorf("the manager exited early (%v); see %s", m.err, m.logPath)
	default:
		return nil
	}
}

// waitReady polls /readyz until it answers 200.
func (m *managerProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for {
		if err := m.exited(); err != nil {
			return err
		}
		if resp, err := hc.Get(m.readyzURL); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the manager was not ready within %s; see %s", timeout, m.logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, then SIGKILL after 10 s, waits for the manager, then kills what is left of its
// process group (a scan worker that outlived it).
func (m *managerProc) stop() {
	select {
	case <-m.done:
	default:
		logf("stopping the manager (SIGTERM)")
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			logf("the manager did not stop within 10s: SIGKILL")
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL) // its own group; ESRCH when empty
	_ = m.log.Close()
}

// freeAddr returns a free 127.0.0.1:port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// rss returns the VmRSS of pid in bytes (0 when it is gone).
func rss(pid int) int64 { return procStatus(pid, "VmRSS:") }

// procStatus returns one kB field of /proc/pid/status in bytes (0 when it or the process is gone):
// VmRSS is RssAnon (heap, stacks) + RssFile (the executable's and memory-mapped files' pages, such
// as the durable store's bbolt file, which the kernel can drop under pressure) + RssShmem.
func procStatus(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// descendants returns every process below pid, found by scanning /proc/*/stat for parent ids
// (/proc/PID/task/*/children needs CONFIG_PROC_CHILDREN, which not every kernel has).
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// memSample is the resident memory of the manager and of its descendants.
type memSample struct {
	manager, children int64
	// managerFile is the file-backed part of manager (RssFile).
	managerFile int64
	nChildren   int
}

func sampleMemory(pid int) memSample {
	s := memSample{manager: rss(pid), managerFile: procStatus(pid, "RssFile:")}
	for _, c := range descendants(pid) {
		if r := rss(c); r > 0 {
			s.children += r
			s.nChildren++
		}
	}
	return s
}
