package scan

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// workerRequest is one line on the child's stdin. Op is "scan", "reload" or "cancel" (of the scan
// with this ID).
type workerRequest struct {
	ID     uint64 `json:"id"`
	Op     string `json:"op"`
	Image  string `json:"image,omitempty"`
	Access Access `json:"access"`
}

// workerResponse is one line on the child's stdout: the result or the error of request ID.
type workerResponse struct {
	ID          uint64    `json:"id"`
	Result      *Result   `json:"result,omitempty"`
	Err         string    `json:"err,omitempty"`
	DBUpdatedAt time.Time `json:"dbUpdatedAt"`
}

// RunWorkerIfAsked turns this process into a scan worker when Isolated started it (the
// PORTCULLIS_SCAN_WORKER environment variable holds its configuration): it serves scans on stdin and
// stdout until stdin closes, then exits. Otherwise it returns at once. Call it first in main (and in
// TestMain of tests that scan through Isolated).
func RunWorkerIfAsked() {
	raw, ok := os.LookupEnv(workerEnv)
	if !ok {
		return
	}
	// The protocol owns stdout; anything else printed goes to stderr.
	proto := os.Stdout
	os.Stdout = os.Stderr
	if err := serveWorker(raw, os.Stdin, proto); err != nil {
		fmt.Fprintln(os.Stderr, workerErrPrefix+err.Error())
		os.Exit(1)
	}
	os.Exit(0)
}

func serveWorker(rawConfig string, in io.Reader, out io.Writer) error {
	var cfg WorkerConfig
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
	reply := func(r workerResponse) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = enc.Encode(r)
	}
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var req workerRequest
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
			resp := workerResponse{ID: req.ID}
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
				resp := workerResponse{ID: req.ID, DBUpdatedAt: t.DBUpdatedAt()}
				if err != nil {
					resp.Err = err.Error()
				} else {
					resp.Result = &res
				}
				reply(resp)
			}()
		default:
			reply(workerResponse{ID: req.ID, Err: "unknown op " + req.Op})
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
