//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a command's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMakeDemoFromClone runs the README's first command, `make demo`, in a fresh clone of the
// repository (its committed HEAD) with nothing beside it: no ../shared, only the tool cache
// (PORTCULLIS_CACHE) that .ci/run fills. It waits for the verdicts, reads the demo's own lines and
// the kubectl table, and stops it with SIGINT as Ctrl-C does. The DB is the shipped one
// (DEMO_VULNDB_REPOSITORY=): no internet here.
func TestMakeDemoFromClone(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	clone := filepath.Join(parent, "portcullis")
	if out, err := exec.Command("git", "clone", "--quiet", root, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 {
		t.Fatalf("the clone has company beside it: %v", entries)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "demo", "DEMO_VULNDB_REPOSITORY=")
	cmd.Dir = clone
	cmd.Env = append(os.Environ(), "KUBECONFIG=") // the demo's own kubeconfig only
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- cmd.Wait() }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-stopped:
		case <-time.After(time.Minute):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-stopped
		}
	}
	// The push receiver's line is the demo's last before it runs until Ctrl-C.
	done := func(s string) bool { return strings.Contains(s, "localenv: pushed ") }
	for !done(out.String()) {
		select {
		case err := <-stopped:
			t.Fatalf("make demo exited before its verdicts: %v\n%s", err, tail(out.String(), 60))
		case <-ctx.Done():
			stop()
			t.Fatalf("make demo printed no verdicts in 20 minutes:\n%s", tail(out.String(), 60))
		case <-time.After(time.Second):
		}
	}
	stop()
	got := out.String()
	t.Logf("make demo from a clone:\n%s", tail(got, 40))
	for _, want := range []string{
		"vulnerability DB: the one built from the Go vulnerability database shipped in third_party/go-vulndb",
		"logs to " + filepath.Join(clone, ".local", "manager.log"),
		"$ kubectl get registries,repositorypolicies,imageattestations",
		"production: VulnerabilityThresholdExceeded (vulnerabilities ",
		"localenv: verdicts in ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	if strings.Contains(got, "../shared") || strings.Contains(got, `"level":"error"`) {
		t.Errorf("the demo's output names ../shared or has the manager's JSON error lines between its own:\n%s", tail(got, 60))
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
