package multinode

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// sh runs a command in the root namespaces and returns its output.
func sh(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// dialIn returns a dial function whose sockets are made inside the network
// namespace at nsPath. A socket belongs to the namespace it was created in,
// so only the creating thread has to switch, and it switches back at once.
func dialIn(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		defer unix.Close(self)
		target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			return nil, fmt.Errorf("entering %s: %w", nsPath, err)
		}
		// The socket is created (and connected) synchronously here.
		var d net.Dialer
		conn, derr := d.DialContext(ctx, network, addr)
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with the goroutine rather
			// than serve others from the wrong namespace.
			panic(fmt.Sprintf("leaving %s: %v", nsPath, err))
		}
		return conn, derr
	}
}
