package trivyscan

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/portcullis-dev/portcullis/internal/scan"
)

// RunWorkerIfAsked turns this process into what the manager's scan.Isolated, scan.EnsureDB or
// scan.UpdateDB started it as, and exits when done: a scan worker when scan.WorkerEnv holds its
// configuration (it serves scans on stdin and stdout until stdin closes), or one DB operation when
// scan.DBEnv holds a scan.DBRequest (its scan.DBResponse goes to stdout). Otherwise it returns at
// once. Call it first in main (cmd/portcullis-scanner) and in TestMain of tests that scan through
// scan.Isolated with the test binary as the worker.
func RunWorkerIfAsked() {
	if raw, ok := os.LookupEnv(scan.DBEnv); ok {
		proto := os.Stdout
		os.Stdout = os.Stderr
		_ = json.NewEncoder(proto).Encode(serveDB(raw))
		os.Exit(0)
	}
	raw, ok := os.LookupEnv(scan.WorkerEnv)
	if !ok {
		return
	}
	// The protocol owns stdout; anything else printed goes to stderr.
	proto := os.Stdout
	os.Stdout = os.Stderr
	if err := serveWorker(raw, os.Stdin, proto); err != nil {
		fmt.Fprintln(os.Stderr, scan.WorkerErrPrefix+err.Error())
		os.Exit(1)
	}
	os.Exit(0)
}

// serveDB performs one scan.DBRequest with this process's trivy.
func serveDB(raw string) scan.DBResponse {
	var req scan.DBRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		return scan.DBResponse{Err: "DB request: " + err.Error()}
	}
	ctx := context.Background()
	var resp scan.DBResponse
	var err error
	switch req.Op {
	case "ensure":
		resp.Stale, err = EnsureDB(ctx, req.Dir, req.Repositories, req.Insecure)
	case "update":
		resp.Updated, err = UpdateDB(ctx, req.Dir, req.Repositories, req.Insecure)
	default:
		err = fmt.Errorf("unknown DB operation %q", req.Op)
	}
	if err != nil {
		resp.Err = err.Error()
	}
	return resp
}

func serveWorker(rawConfig string, in io.Reader, out io.Writer) error {
	var cfg scan.WorkerConfig
	if err := json.Unmarshal([]byte(rawConfig), &cfg); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	t, err := NewTrivy(cfg.DBDir, cfg.CacheDir, cfg.MaxImageSize)
	if err != nil {
		return err
	}
	defer t.Close()
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
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var req scan.WorkerRequest
		if err := dec.Decode(&req); err != nil {
			break // stdin closed: the parent is gone or done
		}
		switch req.Op {
		case "cancel":
			cmu.Lock()
			if cancel := cancels[req.ID]; cancel != nil {
				cancel()
			}
			cmu.Unlock()
		case "reload":
			resp := scan.WorkerResponse{ID: req.ID}
			if err := t.Reload(); err != nil {
				resp.Err = err.Error()
			}
			resp.DBUpdatedAt = t.DBUpdatedAt()
			reply(resp)
		case "scan":
			ctx, cancel := context.WithCancel(context.Background())
			cmu.Lock()
			cancels[req.ID] = cancel
			cmu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := t.Scan(ctx, req.Image, req.Access)
				cmu.Lock()
				delete(cancels, req.ID)
				cmu.Unlock()
				cancel()
				resp := scan.WorkerResponse{ID: req.ID, DBUpdatedAt: t.DBUpdatedAt()}
				if err != nil {
					resp.Err = err.Error()
				} else {
					resp.Result = &res
				}
				reply(resp)
			}()
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
	return nil
}
