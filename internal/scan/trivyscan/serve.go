package trivyscan

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	xhttp "github.com/aquasecurity/trivy/pkg/x/http"

	"github.com/portcullis-dev/portcullis/internal/egress"
	"github.com/portcullis-dev/portcullis/internal/scan"
)

// RunWorkerIfAsked turns this process into what the manager's scan.Isolated, scan.EnsureDB or
// scan.UpdateDB started it as, and exits when done: a scan worker when scan.WorkerEnv holds its
// configuration (it serves scans on stdin and stdout until stdin closes), one DB operation when
// scan.DBEnv holds a scan.DBRequest (its scan.DBResponse goes to stdout), or a listening scanner
// when scan.ListenEnv names a Unix socket (Listen, until SIGTERM). Otherwise it returns at once.
// Call it first in main (cmd/portcullis-scanner) and in TestMain of tests that scan through
// scan.Isolated with the test binary as the worker.
func RunWorkerIfAsked() {
	if raw, ok := os.LookupEnv(scan.DBEnv); ok {
		proto := os.Stdout
		os.Stdout = os.Stderr
		_ = json.NewEncoder(proto).Encode(new(server).db(context.Background(), raw))
		os.Exit(0)
	}
	if path, ok := os.LookupEnv(scan.ListenEnv); ok {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if err := Listen(ctx, path); err != nil {
			fmt.Fprintln(os.Stderr, scan.WorkerErrPrefix+err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	raw, ok := os.LookupEnv(scan.WorkerEnv)
	if !ok {
		return
	}
	// The protocol owns stdout; anything else printed goes to stderr.
	proto := os.Stdout
	os.Stdout = os.Stderr
	var cfg scan.WorkerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, scan.WorkerErrPrefix+"configuration: "+err.Error())
		os.Exit(1)
	}
	s := new(server)
	if _, err := s.open(cfg); err != nil {
		fmt.Fprintln(os.Stderr, scan.WorkerErrPrefix+err.Error())
		os.Exit(1)
	}
	s.serve(os.Stdin, proto)
	s.close()
	os.Exit(0)
}

// Listen serves the worker protocol on the Unix socket at path (created with mode 0600, replacing a
// stale one) to every connection until ctx ends: the scanner container's mode. The first request
// of a connection is "open" (the DB the manager names, opened once for the process) or "db";
// scans, reloads and cancels follow. A connection's end cancels its scans; the DB stays open for
// the next connection (a restarted manager).
func Listen(ctx context.Context, path string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path) // left by an earlier run of this container
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return err
	}
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	s := new(server)
	defer s.close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting on %s: %w", path, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { _ = conn.Close() }()
			stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
			defer stop()
			s.serve(conn, conn)
		}()
	}
}

// server holds the process's one Trivy (trivy's DB is a process-wide global) for every stream it
// serves.
type server struct {
	mu  sync.Mutex
	t   *Trivy
	cfg scan.WorkerConfig // what t was opened with

	dbMu sync.Mutex // one DB download at a time
}

// open opens cfg's DB, or checks that the one open is cfg's.
func (s *server) open(cfg scan.WorkerConfig) (*Trivy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil {
		if s.cfg.DBDir != cfg.DBDir || s.cfg.CacheDir != cfg.CacheDir || s.cfg.MaxImageSize != cfg.MaxImageSize {
			return nil, fmt.Errorf("this scanner already has the DB %s (cache %s) open, not %s (cache %s)", s.cfg.DBDir, s.cfg.CacheDir, cfg.DBDir, cfg.CacheDir)
		}
		return s.t, nil
	}
	t, err := NewTrivy(cfg.DBDir, cfg.CacheDir, cfg.MaxImageSize)
	if err != nil {
		return nil, err
	}
	s.t, s.cfg = t, cfg
	return t, nil
}

func (s *server) trivy() (*Trivy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t == nil {
		return nil, errors.New(`no DB is open: the first request must be "open"`)
	}
	return s.t, nil
}

func (s *server) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil {
		_ = s.t.Close()
		s.t = nil
	}
}

// db performs one scan.DBRequest (JSON) with this process's trivy. An "ensure" of the DB this
// process has open becomes an update and a reload: the open DB is never replaced under it.
func (s *server) db(ctx context.Context, raw string) scan.DBResponse {
	var req scan.DBRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		return scan.DBResponse{Err: "DB request: " + err.Error()}
	}
	if req.Egress != nil {
		p, err := egress.Parse(req.Egress.Allow, req.Egress.Deny)
		if err != nil {
			return scan.DBResponse{Err: "DB request: " + err.Error()}
		}
		ctx = xhttp.WithTransport(ctx, egressTransport{p})
	}
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	s.mu.Lock()
	open := s.t
	if open != nil && s.cfg.DBDir != req.Dir {
		open = nil
	}
	s.mu.Unlock()
	var resp scan.DBResponse
	var err error
	switch {
	case req.Op == "ensure" && open != nil:
		if resp.Updated, err = UpdateDB(ctx, req.Dir, req.Repositories, req.Insecure); err == nil && resp.Updated {
			err = open.Reload()
		}
		resp.Stale = err != nil
	case req.Op == "ensure":
		resp.Stale, err = EnsureDB(ctx, req.Dir, req.Repositories, req.Insecure)
	case req.Op == "update":
		resp.Updated, err = UpdateDB(ctx, req.Dir, req.Repositories, req.Insecure)
	default:
		err = fmt.Errorf("unknown DB operation %q", req.Op)
	}
	if err != nil {
		resp.Err = err.Error()
	}
	return resp
}

// serve answers the requests read from in on out until in ends; then it cancels the scans still
// running and waits for them.
func (s *server) serve(in io.Reader, out io.Writer) {
	var (
		wmu     sync.Mutex
		enc     = json.NewEncoder(out)
		cmu     sync.Mutex
		cancels = map[uint64]context.CancelFunc{}
		wg      sync.WaitGroup
	)
	reply := func(r scan.WorkerResponse) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = enc.Encode(r)
	}
	// async runs f for request id in its own goroutine, cancelled by a "cancel" or the stream's end.
	async := func(id uint64, f func(ctx context.Context) scan.WorkerResponse) {
		ctx, cancel := context.WithCancel(context.Background())
		cmu.Lock()
		cancels[id] = cancel
		cmu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := f(ctx)
			cmu.Lock()
			delete(cancels, id)
			cmu.Unlock()
			cancel()
			resp.ID = id
			reply(resp)
		}()
	}
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var req scan.WorkerRequest
		if err := dec.Decode(&req); err != nil {
			break // stdin closed or the connection ended: the manager is gone or done
		}
		switch req.Op {
		case "cancel":
			cmu.Lock()
			if cancel := cancels[req.ID]; cancel != nil {
				cancel()
			}
			cmu.Unlock()
		case "open":
			resp := scan.WorkerResponse{ID: req.ID}
			if req.Config == nil {
				resp.Err = "open: no configuration"
			} else if t, err := s.open(*req.Config); err != nil {
				resp.Err = err.Error()
			} else {
				resp.DBUpdatedAt = t.DBUpdatedAt()
			}
			reply(resp)
		case "db":
			raw, _ := json.Marshal(req.DB)
			async(req.ID, func(ctx context.Context) scan.WorkerResponse {
				r := s.db(ctx, string(raw))
				return scan.WorkerResponse{DB: &r}
			})
		case "reload":
			resp := scan.WorkerResponse{ID: req.ID}
			t, err := s.trivy()
			if err == nil {
				err = t.Reload()
				resp.DBUpdatedAt = t.DBUpdatedAt()
			}
			if err != nil {
				resp.Err = err.Error()
			}
			reply(resp)
		case "scan":
			async(req.ID, func(ctx context.Context) scan.WorkerResponse {
				t, err := s.trivy()
				if err != nil {
					return scan.WorkerResponse{Err: err.Error()}
				}
				res, err := t.Scan(ctx, req.Image, req.Access)
				resp := scan.WorkerResponse{DBUpdatedAt: t.DBUpdatedAt()}
				if err != nil {
					resp.Err = err.Error()
				} else {
					resp.Result = &res
				}
				return resp
			})
		default:
			reply(scan.WorkerResponse{ID: req.ID, Err: "unknown op " + req.Op})
		}
	}
	cmu.Lock()
	for _, cancel := range cancels {
		cancel()
	}
	cmu.Unlock()
	wg.Wait()
}

// egressTransport is trivy's transport (pkg/x/http) with every dial checked against the manager's
// egress policy: the DB repository, its token realm and any redirect (to blob storage).
type egressTransport struct{ p *egress.Policy }

func (e egressTransport) Build(opts ...xhttp.TransportOption) http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = e.p.DialContext
	for _, opt := range opts {
		opt(tr)
	}
	return tr
}
