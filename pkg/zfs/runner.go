package zfs

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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
type ExecRunner struct {
	// Root, when set, is the host's root folder as mounted in this
	// container: commands run chrooted into it, so a node plugin uses the
	// host's own zfs and zpool, which match the host's kernel module (or
	// zfs-fuse daemon). Paths in arguments are then host paths, which is why
	// the driver mounts its folders at the same paths as on the host.
	Root string
}

func (r ExecRunner) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	if r.Root != "" && r.Root != "/" {
		// exec.Command resolved name against our own PATH; inside the host
		// root the binary is found by the host's usual locations instead.
		cmd.Path, cmd.Err = hostBinary(r.Root, name), nil
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: r.Root}
		cmd.Dir = "/"
	}
	return cmd
}

// hostBinary is name's path inside root (not prefixed with root, since the
// child resolves it after the chroot), or name itself when not found, which
// then fails with a clear "no such file" from exec.
func hostBinary(root, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(dir, name)
		// Lstat: a host symlink points into the host's tree, not ours.
		if st, err := os.Lstat(filepath.Join(root, p)); err == nil && !st.IsDir() {
			return p
		}
	}
	return name
}

func (r ExecRunner) Run(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, []byte, error) {
	cmd := r.command(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdin = stdin
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err := cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

func (r ExecRunner) Start(ctx context.Context, name string, args ...string) (Process, error) {
	cmd := r.command(ctx, name, args...)
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
