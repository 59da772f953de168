package multinode

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dotmesh-io/dotmesh-csi/e2e/procs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
)

// Node is one simulated machine.
type Node struct {
	Name    string
	Index   int
	IP      string
	Dir     string
	DiskDir string // the backing disk's mount, inside the node
	Netns   string // path under /run/netns
	Holder  int    // PID of the process holding the node's mount namespace
	Plugin  *procs.Proc
	h       *Harness
	dead    bool

	// Kubernetes nodes only (Options.Kubernetes).
	Kubelet, Containerd *procs.Proc
	LoopDisk            *procs.Proc // the loop-disk node plugin (Harness.StartLoopDisks)
	kubeletArgs         []string
	containerdSock      string
	cgroupRoot          string
	madeDirs            []string // mount points made on the machine, removed at teardown

	pluginToken string // the node plugin's ServiceAccount token (PluginConfig)
	zfsdTLS     bool   // the plugin serves zfsd on TCP (cluster mode)
}

func (h *Harness) addNode(i int, diskSize int64) *Node {
	t := h.t
	n := &Node{Name: fmt.Sprintf("node%d", i), Index: i, IP: fmt.Sprintf("%s.%d", h.Subnet, 10+i),
		Dir: filepath.Join(h.Dir, fmt.Sprintf("node%d", i)), h: h}
	n.DiskDir = filepath.Join(n.Dir, "disk")
	for _, d := range []string{n.Dir, n.DiskDir, filepath.Join(n.Dir, "kubelet"),
		filepath.Join(n.Dir, "zfs", "run"), filepath.Join(n.Dir, "zfs", "lib"), filepath.Join(n.Dir, "zfs", "etc"), filepath.Join(n.Dir, "zfs", "lock")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	// Network: a namespace with a veth to the control plane's bridge.
	ns := fmt.Sprintf("dmn%d-%s", i, h.ID)
	h.run("ip", "netns", "add", ns)
	n.Netns = "/run/netns/" + ns
	host, peer := fmt.Sprintf("dmh%d%s", i, h.ID), fmt.Sprintf("dmp%d%s", i, h.ID)
	h.run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	h.run("ip", "link", "set", host, "netns", h.CPNetns)
	h.run("ip", "link", "set", peer, "netns", n.Netns)
	cp := []string{"nsenter", "--net=" + h.CPNetns}
	h.run(append(cp, "ip", "link", "set", host, "master", "br0")...)
	h.run(append(cp, "ip", "link", "set", host, "up")...)
	in := []string{"nsenter", "--net=" + n.Netns}
	h.run(append(in, "ip", "link", "set", "lo", "up")...)
	h.run(append(in, "ip", "link", "set", peer, "name", "eth0")...)
	h.run(append(in, "ip", "addr", "add", n.IP+"/24", "dev", "eth0")...)
	h.run(append(in, "ip", "link", "set", "eth0", "up")...)

	// Mount namespace: held by a sleeping process, so mounts made inside
	// live as long as the node does.
	holder := exec.Command("nsenter", "--net="+n.Netns, "unshare", "--mount", "--uts", "--propagation", "private", "sleep", "infinity")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	n.Holder = holder.Process.Pid
	go func() { _ = holder.Wait() }()
	t.Cleanup(n.teardown)
	waitFor(t, 5*time.Second, func() bool {
		self, _ := os.Readlink("/proc/self/ns/mnt")
		other, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.Holder))
		return other != "" && other != self
	})
	// Private ZFS state: zfs-fuse's socket, cache, config and lock live at
	// fixed paths, so each node gets its own copies bound over them.
	if b, err := os.ReadFile("/etc/zfs/zfsrc"); err == nil {
		_ = os.WriteFile(filepath.Join(n.Dir, "zfs", "etc", "zfsrc"), b, 0o644)
	}
	for src, dst := range map[string]string{"run": "/run/zfs", "lib": "/var/lib/zfs", "etc": "/etc/zfs", "lock": "/run/lock/zfs"} {
		n.mustExec("mkdir", "-p", dst)
		n.mustExec("mount", "--bind", filepath.Join(n.Dir, "zfs", src), dst)
	}
	// Other daemons' FUSE mounts came along when the namespace was made.
	n.unmountFuse()
	n.mustExec("hostname", n.Name)

	// The backing disk: ext4 in a file, loop-mounted inside the node only.
	img := filepath.Join(n.Dir, "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	h.run("mkfs.ext4", "-q", "-F", img)
	n.mustExec("mount", "-o", "loop", img, n.DiskDir)

	if err := n.StartZfsFuse(); err != nil {
		t.Fatal(err)
	}
	return n
}

// StartZfsFuse starts the node's zfs-fuse daemon, as a machine's boot (or
// systemd, restarting it) would, and waits until it answers. The driver
// imports its pools with cachefile=none, so the daemon brings none of them
// back by itself.
func (n *Node) StartZfsFuse() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if pid := n.zfsFusePID(); pid > 0 {
		return fmt.Errorf("%s: zfs-fuse is already running (pid %d)", n.Name, pid)
	}
	// zfs-fuse refuses to start while the pid in its pid file exists, and
	// a daemon killed here lingers as a zombie (this machine's pid 1 may
	// not reap it). systemd removes a dead service's PIDFile likewise.
	if err := os.Remove(n.zfsFusePidfile()); err != nil && !os.IsNotExist(err) {
		return err
	}
	if out, err := n.Exec(ctx, "zfs-fuse", "--no-kstat-mount", "--pidfile", n.zfsFusePidfile()); err != nil {
		return fmt.Errorf("%s: starting zfs-fuse: %w\n%s", n.Name, err, out)
	}
	for {
		_, err := n.Exec(ctx, "zpool", "list")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: zfs-fuse not answering 20 s after it started: %w", n.Name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StopZfsFuse sends sig to the node's zfs-fuse daemon and waits, at most
// limit, until it is gone. The daemon's FUSE mounts stay behind, dead.
func (n *Node) StopZfsFuse(sig syscall.Signal, limit time.Duration) error {
	pid := n.zfsFusePID()
	if pid == 0 {
		return nil
	}
	signal(pid, sig)
	deadline := time.Now().Add(limit)
	for n.zfsFusePID() == pid {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: zfs-fuse (pid %d) still running %s after %v", n.Name, pid, limit, sig)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func waitFor(t testing.TB, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Exec runs a command inside the node's mount, network and UTS namespaces.
func (n *Node) Exec(ctx context.Context, args ...string) (string, error) {
	return sh(ctx, append([]string{"nsenter", "-t", strconv.Itoa(n.Holder), "-m", "-n", "-u"}, args...)...)
}

func (n *Node) mustExec(args ...string) string {
	n.h.t.Helper()
	out, err := n.Exec(n.h.ctx(), args...)
	if err != nil {
		n.h.t.Fatal(err)
	}
	return out
}

func (n *Node) unmountFuse() {
	ms, err := mountinfo.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", n.Holder))
	if err != nil {
		return
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if strings.HasPrefix(ms[i].FSType, "fuse") {
			_, _ = n.Exec(context.Background(), "umount", "-l", ms[i].MountPoint)
		}
	}
}

// Start runs a long-lived process inside the node.
func (n *Node) Start(name string, args ...string) *procs.Proc {
	return procs.Start(n.h.t, filepath.Join(n.Dir, name+".log"), "nsenter",
		append([]string{"-t", strconv.Itoa(n.Holder), "-m", "-n", "-u"}, args...)...)
}

// StartPlugin runs the node plugin in cluster mode and waits for its socket.
// It authenticates as the node plugin's ServiceAccount (PluginConfig), so
// it has deploy/'s rights and gets its zfsd certificate from the
// controller's signer.
func (n *Node) StartPlugin(args ...string) *procs.Proc {
	kubeconfig, _ := n.PluginConfig()
	p := n.startPlugin("1536Mi", append([]string{"--kubeconfig=" + kubeconfig, "--namespace=" + Namespace,
		"--zfsd-listen=" + n.IP + ":7455"}, args...)...)
	n.zfsdTLS = true
	if n.h.controller != nil && n.h.controller.Running() {
		n.WaitZfsdCertificate(time.Minute)
	}
	return p
}

// StartStandalone runs the node plugin with --standalone (CSI Identity,
// Controller and Node on one socket, a local pool, no Kubernetes) and
// waits for its socket.
func (n *Node) StartStandalone(poolSize string, args ...string) *procs.Proc {
	return n.startPlugin(poolSize, append([]string{"--standalone"}, args...)...)
}

func (n *Node) startPlugin(poolSize string, args ...string) *procs.Proc {
	sock := n.Socket()
	_ = os.Remove(sock)
	n.Plugin = n.Start("plugin", append([]string{n.h.Bin["node"], "--endpoint=unix://" + sock, "--node-id=" + n.Name,
		"--data-dir=" + filepath.Join(n.DiskDir, "dotmesh"), "--pool-name=pool-" + n.Name, "--pool-size=" + poolSize,
		"--mount-root=" + filepath.Join(n.Dir, "mnt"), "--allowed-target-dirs=" + n.KubeletDir(), "--v=2"}, args...)...)
	n.Plugin.WaitForSocket(n.h.t, sock, time.Minute)
	return n.Plugin
}

// Socket is the node plugin's CSI socket, reachable from the root namespace.
func (n *Node) Socket() string { return filepath.Join(n.Dir, "csi.sock") }

// KubeletDir is where staging and target paths go on this node.
func (n *Node) KubeletDir() string { return filepath.Join(n.Dir, "kubelet") }

func (n *Node) zfsFusePidfile() string { return filepath.Join(n.Dir, "zfs-fuse.pid") }

// zfsFusePID is the node's zfs-fuse daemon, or 0 when it is not running.
// The pid file outlives a killed daemon, and its number may since belong
// to another process (the host's own zfs-fuse, say): only a process in
// this node's mount namespace is the node's.
func (n *Node) zfsFusePID() int {
	b, err := os.ReadFile(n.zfsFusePidfile())
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		return 0
	}
	// A zombie has no namespaces left to read, so it counts as gone.
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return 0
	}
	ours, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.Holder))
	if err != nil || theirs != ours {
		return 0
	}
	return pid
}

// Kill is a power loss: every process of the node dies at once, its
// network goes, and nothing is exported or unmounted cleanly.
func (n *Node) Kill() {
	if n.dead {
		return
	}
	n.dead = true
	if n.Plugin != nil && n.Plugin.Cmd.Process != nil {
		signal(n.Plugin.Cmd.Process.Pid, syscall.SIGKILL)
	}
	if pid := n.zfsFusePID(); pid > 0 {
		signal(pid, syscall.SIGKILL)
	}
	_, _ = sh(context.Background(), "ip", "netns", "del", strings.TrimPrefix(n.Netns, "/run/netns/"))
}

// teardown undoes the node whatever state it is in: stop the plugin (which
// exports its pool), stop zfs-fuse, unmount the dead FUSE mounts and the
// disk, end the namespace holder, and delete the network namespace.
func (n *Node) teardown() {
	ctx := context.Background()
	if n.Plugin != nil {
		_ = n.Plugin.Stop(30 * time.Second)
	}
	if !n.dead {
		_, _ = n.Exec(ctx, "sh", "-c", "zpool list -H -o name | xargs -r -n1 zpool export -f")
	}
	if n.StopZfsFuse(syscall.SIGTERM, 5*time.Second) != nil {
		_ = n.StopZfsFuse(syscall.SIGKILL, 5*time.Second)
	}
	n.unmountFuse()
	_, _ = n.Exec(ctx, "umount", "-l", n.DiskDir)
	if n.Holder > 0 {
		signal(n.Holder, syscall.SIGKILL)
	}
	_, _ = sh(ctx, "ip", "netns", "del", strings.TrimPrefix(n.Netns, "/run/netns/"))
	for i := len(n.madeDirs) - 1; i >= 0; i-- {
		_ = os.Remove(n.madeDirs[i])
	}
	// The loop device goes with the last reference to the disk's mount.
	img := filepath.Join(n.Dir, "disk.img")
	for i := 0; i < 50; i++ {
		out, _ := sh(ctx, "losetup", "-j", img)
		if strings.TrimSpace(out) == "" {
			return
		}
		if i == 49 {
			dev, _, _ := strings.Cut(out, ":")
			_, _ = sh(ctx, "losetup", "-d", dev)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
