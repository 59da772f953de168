package zfs

import (
	"bytes"
	"context"
	"io"
	"os/exec"
)

// Runner runs a command with no shell in between. It is the seam unit tests
// replace with recorded outputs.
type Runner interface {
	// Run runs name with args and returns stdout and stderr. err is non-nil
	// when the command could not start or exited non-zero.
	Run(ctx context.Context, stdin io.Reader, name string, args ...string) (stdout, stderr []byte, err error)
	// Start starts a long-running command (send or receive) whose stdout or
	// stdin the caller streams.
	Start(ctx context.Context, name string, args ...string) (Process, error)
}

// Process is a started command.
type Process interface {
	Stdout() io.ReadCloser
	Stdin() io.WriteCloser
	// Wait waits for exit and returns stderr.
	Wait() (stderr []byte, err error)
}

// ExecRunner runs the real binaries.
type ExecRunner struct{}

func (ExecRunner) Run(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, []byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdin = stdin
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err := cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

func (ExecRunner) Start(ctx context.Context, name string, args ...string) (Process, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	p := &execProcess{cmd: cmd}
	var err error
	if p.stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

type execProcess struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stdin  io.WriteCloser
	stderr bytes.Buffer
}

func (p *execProcess) Stdout() io.ReadCloser { return p.stdout }
func (p *execProcess) Stdin() io.WriteCloser { return p.stdin }
func (p *execProcess) Wait() ([]byte, error) {
	err := p.cmd.Wait()
	return p.stderr.Bytes(), err
}
