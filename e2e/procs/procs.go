// Package procs builds the project's binaries and runs them as child
// processes for end-to-end tests, stopping them by PID when the test ends.
package procs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Root is the repository root, found from this file's location.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles ./cmd/<name> into dir and returns the binary's path.
func Build(t testing.TB, dir, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = Root()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, b)
	}
	return out
}

// Proc is a started child process.
type Proc struct {
	Cmd  *exec.Cmd
	done chan error
}

// Start runs bin with args, logging to logPath, and stops it with SIGTERM
// (then SIGKILL after 30 s) when the test ends.
func Start(t testing.TB, logPath, bin string, args ...string) *Proc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	p := &Proc{Cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		if err := p.Stop(30 * time.Second); err != nil {
			t.Logf("%s exited: %v (log %s)", filepath.Base(bin), err, logPath)
		}
	})
	return p
}

// Stop sends SIGTERM and waits; it is a no-op once the process is gone.
func (p *Proc) Stop(limit time.Duration) error {
	if p.Cmd.ProcessState != nil {
		return nil
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(limit):
		_ = p.Cmd.Process.Kill()
		return <-p.done
	}
}

// Running is whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return false
	default:
		return true
	}
}

// WaitForSocket waits until path exists or the process exits.
func (p *Proc) WaitForSocket(t testing.TB, path string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("process exited before %s appeared: %v", path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not appear within %s", path, limit)
}

// Wait waits for the process to exit by itself, at most limit.
func (p *Proc) Wait(limit time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(limit):
		return fmt.Errorf("still running after %s", limit)
	}
}
