package scan

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aquasecurity/trivy-db/pkg/metadata"
)

// Isolated scans in a long-lived child process that runs Trivy in-process: the same executable,
// started with PORTCULLIS_SCAN_WORKER set, so it answers at RunWorkerIfAsked before doing anything
// else. trivy analyses layers in goroutines of its own, where a panic cannot be recovered, and a fault
// in its cache cannot be recovered anywhere; in the child either ends only the child. The scans in
// flight then fail with ErrWorkerExited (and the child's last words) and the next scan starts a new
// child, so the manager never goes down with a scan.
//
// Protocol: one JSON object per line on the child's stdin (requests) and stdout (responses), matched
// by ID; the child serves requests concurrently and exits when its stdin closes (the parent is gone).
type Isolated struct {
	cfg WorkerConfig

	mu sync.Mutex
	w  *worker // the running child; nil or exited: start one on the next call

	dbUpdated atomic.Value // time.Time of the DB the child has open
	nextID    atomic.Uint64
}

// WorkerConfig says how to reach the worker and what it opens.
type WorkerConfig struct {
	// DBDir, CacheDir and MaxImageSize are NewTrivy's arguments in the worker (paths in the
	// worker's file system).
	DBDir, CacheDir string
	MaxImageSize    int64
	// Command starts the child; default: this executable (os.Executable) without arguments.
	Command []string `json:"-"`
	// Env is added to the child's environment.
	Env []string `json:"-"`
	// Address, when set, is the Unix socket of a scanner that is already running (portcullis-scanner
	// --listen: the scanner container of config/manager, which holds no ServiceAccount token and
	// has its own memory and CPU limits); no child is started. Its connection ending fails the
	// scans in flight with ErrWorkerExited, and the next call connects again.
	Address string `json:"-"`
	// Egress is the policy the scanner's own downloads (the vulnerability DB) are dialled under.
	Egress *EgressRules `json:"-"`
}

// dialWait is how long a call waits for a listening scanner's socket to accept (its container
// starting or restarting).
var dialWait = 30 * time.Second

// ErrWorkerExited: the scan process exited (crashed) while a scan was in flight.
var ErrWorkerExited = errors.New("the scan worker process exited")

var _ Scanner = (*Isolated)(nil)

// NewIsolated checks the DB in cfg.DBDir and returns a scanner whose child starts on the first scan.
// With cfg.Address it connects to the scanner there and has it open the DB instead.
func NewIsolated(cfg WorkerConfig) (*Isolated, error) {
	if cfg.Address != "" {
		s := &Isolated{cfg: cfg}
		s.dbUpdated.Store(time.Time{})
		if _, err := s.running(); err != nil {
			return nil, err
		}
		return s, nil
	}
	if len(cfg.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating this executable for the scan worker: %w", err)
		}
		cfg.Command = []string{exe}
	}
	m, err := metadata.NewClient(cfg.DBDir).Get()
	if err != nil {
		return nil, fmt.Errorf("vulnerability DB in %s: %w", cfg.DBDir, err)
	}
	s := &Isolated{cfg: cfg}
	s.dbUpdated.Store(m.UpdatedAt)
	return s, nil
}

// DBUpdatedAt is the build time of the DB the child has open.
func (s *Isolated) DBUpdatedAt() time.Time { return s.dbUpdated.Load().(time.Time) }

// Scan scans the image in the child. ctx's end cancels the scan in the child too.
func (s *Isolated) Scan(ctx context.Context, image string, access Access) (Result, error) {
	resp, err := s.call(ctx, WorkerRequest{Op: "scan", Image: image, Access: access})
	if err != nil {
		return Result{}, err
	}
	return *resp.Result, nil
}

// Reload makes the child load the DB in DBDir again (after an update); on failure the child keeps
// the DB it had.
func (s *Isolated) Reload() error {
	resp, err := s.call(context.Background(), WorkerRequest{Op: "reload"})
	if err != nil {
		return err
	}
	s.dbUpdated.Store(resp.DBUpdatedAt)
	return nil
}

// Close stops the child: its stdin closes, and it is killed if it has not exited after 10 s.
func (s *Isolated) Close() error {
	s.mu.Lock()
	w := s.w
	s.w = nil
	s.mu.Unlock()
	if w == nil {
		return nil
	}
	_ = w.stop.Close()
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		if w.cmd != nil {
			_ = w.cmd.Process.Kill()
		}
		<-w.done
	}
	return nil
}

func (s *Isolated) call(ctx context.Context, req WorkerRequest) (WorkerResponse, error) {
	w, err := s.running()
	if err != nil {
		return WorkerResponse{}, err
	}
	req.ID = s.nextID.Add(1)
	return w.roundTrip(ctx, req)
}

// roundTrip sends req and waits for its response, the worker's end or ctx's (which cancels req in
// the worker).
func (w *worker) roundTrip(ctx context.Context, req WorkerRequest) (WorkerResponse, error) {
	ch := make(chan WorkerResponse, 1)
	w.mu.Lock()
	w.pending[req.ID] = ch
	err := w.enc.Encode(req)
	w.mu.Unlock()
	if err != nil {
		_ = w.stop.Close()
		return WorkerResponse{}, w.exited(err)
	}
	select {
	case resp := <-ch:
		if resp.Err != "" {
			return WorkerResponse{}, errors.New(resp.Err)
		}
		return resp, nil
	case <-w.done:
		return WorkerResponse{}, w.exited(nil)
	case <-ctx.Done():
		w.mu.Lock()
		delete(w.pending, req.ID)
		_ = w.enc.Encode(WorkerRequest{ID: req.ID, Op: "cancel"})
		w.mu.Unlock()
		return WorkerResponse{}, ctx.Err()
	}
}

// running returns the live child, starting one when there is none or it exited.
func (s *Isolated) running() (*worker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil {
		select {
		case <-s.w.done:
		default:
			return s.w, nil
		}
	}
	if s.cfg.Address != "" {
		w, err := dialWorker(s.cfg.Address)
		if err != nil {
			return nil, err
		}
		// The first request on a connection opens the DB (or checks the one open is ours).
		cfg := s.cfg
		resp, err := w.roundTrip(context.Background(), WorkerRequest{ID: s.nextID.Add(1), Op: "open", Config: &cfg})
		if err != nil {
			_ = w.stop.Close()
			return nil, fmt.Errorf("opening the vulnerability DB %s in the scanner at %s: %w", cfg.DBDir, s.cfg.Address, err)
		}
		s.dbUpdated.Store(resp.DBUpdatedAt)
		s.w = w
		return w, nil
	}
	cfg, err := json.Marshal(s.cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.cfg.Command[0], s.cfg.Command[1:]...)
	cmd.Env = append(append(os.Environ(), s.cfg.Env...), WorkerEnv+"="+string(cfg))
	tail := &crashNote{}
	cmd.Stderr = io.MultiWriter(os.Stderr, tail)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the scan worker %s: %w", s.cfg.Command[0], err)
	}
	w := &worker{cmd: cmd, stop: stdin, enc: json.NewEncoder(stdin), pending: map[uint64]chan WorkerResponse{}, done: make(chan struct{}), tail: tail}
	go w.readResponses(stdout, cmd.Wait)
	s.w = w
	return w, nil
}

// dialWorker connects to a listening scanner, waiting up to dialWait for its socket to accept.
func dialWorker(address string) (*worker, error) {
	deadline := time.Now().Add(dialWait)
	var d net.Dialer
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		conn, err := d.DialContext(ctx, "unix", address)
		cancel()
		if err == nil {
			w := &worker{stop: conn, enc: json.NewEncoder(conn), pending: map[uint64]chan WorkerResponse{}, done: make(chan struct{}),
				tail: &crashNote{}, address: address}
			go w.readResponses(conn, func() error { return fmt.Errorf("the connection to the scanner at %s closed", address) })
			return w, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connecting to the scanner at %s: %w", address, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// worker is one running worker: a child process (cmd set; stop closes its stdin) or a connection
// to a listening scanner (address set; stop closes the connection).
type worker struct {
	cmd     *exec.Cmd
	address string
	stop    io.Closer
	tail    *crashNote
	done    chan struct{} // closed once the child has exited or the connection ended
	err     error         // how it ended, set before done closes

	mu      sync.Mutex // enc and pending
	enc     *json.Encoder
	pending map[uint64]chan WorkerResponse
}

func (w *worker) readResponses(stdout io.Reader, wait func() error) {
	dec := json.NewDecoder(bufio.NewReader(stdout))
	for {
		var resp WorkerResponse
		if err := dec.Decode(&resp); err != nil {
			break
		}
		w.mu.Lock()
		ch := w.pending[resp.ID]
		delete(w.pending, resp.ID)
		w.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
	}
	w.err = wait()
	close(w.done)
}

// exited describes the child's end: the line in which it said why it crashed ("panic: ...", "fatal
// error: ..."), else its exit status or the write error.
func (w *worker) exited(cause error) error {
	<-w.done
	msg := w.tail.note()
	if msg == "" && w.err != nil {
		msg = w.err.Error()
	} else if msg == "" && cause != nil {
		msg = cause.Error()
	}
	return fmt.Errorf("%w: %s", ErrWorkerExited, msg)
}

// crashNote watches the child's stderr for the line a crashing Go program prints about why
// ("panic: ...", "fatal error: ..."), which a goroutine dump then follows.
type crashNote struct {
	mu      sync.Mutex
	partial []byte
	first   string
}

func (c *crashNote) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		line := string(c.partial[:i])
		c.partial = c.partial[i+1:]
		if c.first == "" && (strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") || strings.HasPrefix(line, WorkerErrPrefix)) {
			c.first = line
			if len(c.first) > 512 {
				c.first = c.first[:512] + "..."
			}
		}
	}
	if len(c.partial) > 64<<10 { // a line this long is no crash note
		c.partial = c.partial[:0]
	}
	return len(p), nil
}

func (c *crashNote) note() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}
