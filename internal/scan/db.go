package scan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EnsureDB prepares dir for the first scans at start, in a scanner process (at.Command, default
// this executable; or the listening scanner at at.Address, where dir is a path of its file system):
// it downloads and installs trivy's DB when dir has none or the one it has is due. When the download
// fails but dir already holds a DB (a persistent cache volume, a pod restart), the older DB is kept
// and the error is returned with stale=true: scanning goes on and the caller retries later. With no
// DB at all the error is fatal (stale=false).
func EnsureDB(ctx context.Context, at WorkerConfig, dir string, repositories []string, insecure bool) (stale bool, err error) {
	resp, err := runDB(ctx, at, DBRequest{Op: "ensure", Dir: dir, Repositories: repositories, Insecure: insecure})
	if err != nil {
		// The scanner process failed (killed at the deadline, crashed, missing): an older DB in
		// dir still serves, as when the download itself fails. A listening scanner's dir is not
		// ours to look at: it says Stale itself when it answers.
		return at.Address == "" && hasDB(dir), err
	}
	if resp.Err != "" {
		return resp.Stale, errors.New(resp.Err)
	}
	return false, nil
}

// UpdateDB downloads trivy's DB into dir+".new", in a scanner process (as EnsureDB), when the one in
// dir is due; it reports whether a new DB is ready for Isolated.Reload.
func UpdateDB(ctx context.Context, at WorkerConfig, dir string, repositories []string, insecure bool) (bool, error) {
	resp, err := runDB(ctx, at, DBRequest{Op: "update", Dir: dir, Repositories: repositories, Insecure: insecure})
	if err != nil {
		return false, err
	}
	if resp.Err != "" {
		return false, errors.New(resp.Err)
	}
	return resp.Updated, nil
}

// runDB starts at.Command with req in DBEnv and reads its one DBResponse from stdout; the process's
// stderr goes to this process's stderr (its logs). With at.Address it sends req to the listening
// scanner there instead.
func runDB(ctx context.Context, at WorkerConfig, req DBRequest) (DBResponse, error) {
	req.Egress = at.Egress
	if at.Address != "" {
		w, err := dialWorker(at.Address)
		if err != nil {
			return DBResponse{}, err
		}
		defer func() { _ = w.stop.Close() }()
		resp, err := w.roundTrip(ctx, WorkerRequest{ID: 1, Op: "db", DB: &req})
		if err != nil {
			return DBResponse{}, fmt.Errorf("the scanner at %s did not perform the DB %s: %w", at.Address, req.Op, err)
		}
		if resp.DB == nil {
			return DBResponse{}, fmt.Errorf("the scanner at %s answered the DB %s without a result", at.Address, req.Op)
		}
		return *resp.DB, nil
	}
	command := at.Command
	if len(command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return DBResponse{}, fmt.Errorf("locating this executable for the scanner: %w", err)
		}
		command = []string{exe}
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return DBResponse{}, err
	}
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Env = append(os.Environ(), DBEnv+"="+string(raw))
	var out bytes.Buffer
	tail := &crashNote{}
	cmd.Stdout, cmd.Stderr = &out, io.MultiWriter(os.Stderr, tail)
	runErr := cmd.Run()
	var resp DBResponse
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &resp); err != nil {
		msg := tail.note()
		if msg == "" && runErr != nil {
			msg = runErr.Error()
		}
		return DBResponse{}, fmt.Errorf("the scanner %s did not perform the DB %s: %s", command[0], req.Op, strings.TrimSpace(msg))
	}
	return resp, nil
}

// hasDB reports whether dir holds a trivy DB (non-empty trivy.db and metadata.json).
func hasDB(dir string) bool {
	for _, f := range []string{"trivy.db", "metadata.json"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			return false
		}
	}
	return true
}
