//go:build zfs

package crash

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/dotmesh-io/dotmesh-csi/e2e/procs"
	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
)

// rig is the standalone driver on one pool in a folder of its own, and a
// CSI connection to it. The driver is started, killed and restarted on the
// same pool; only the process the rig started (and what it ran) is ever
// signalled.
type rig struct {
	t     *testing.T
	seed  uint64
	round int

	bin       string
	work      string // everything below here is the test's
	sock      string
	kubelet   string // the allowed folder for staging and target paths
	dataDir   string
	mountRoot string
	pool      string
	logPath   string
	logf      *os.File

	cmd    *exec.Cmd
	exited chan struct{}
	conn   *grpc.ClientConn
	ident  csi.IdentityClient
	ctrl   csi.ControllerClient
	node   csi.NodeClient

	rep *report
}

const (
	startLimit  = 2 * time.Minute
	callTimeout = 90 * time.Second
)

// newRig builds the node binary and lays out the folders. Cleanup stops the
// driver, unmounts what is left under the folder and destroys the pool, also
// when the test fails.
func newRig(t *testing.T, seed uint64, rep *report) *rig {
	t.Helper()
	work, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, seed: seed, rep: rep, work: work,
		bin:     procs.Build(t, work, "node"),
		sock:    filepath.Join(work, "csi.sock"),
		kubelet: filepath.Join(work, "kubelet"),
		dataDir: filepath.Join(work, "data"),
		pool:    zfstest.UniqueName("crash"),
		logPath: filepath.Join(work, "driver.log"),
	}
	r.mountRoot = filepath.Join(r.dataDir, "mnt") // the driver's default --mount-root
	if err := os.MkdirAll(r.kubelet, 0o750); err != nil {
		t.Fatal(err)
	}
	if r.logf, err = os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.cleanup)
	return r
}

func (r *rig) stagingPath(name string) string { return filepath.Join(r.kubelet, "staging", name) }
func (r *rig) targetPath(name string) string  { return filepath.Join(r.kubelet, "pods", name, "mount") }

// start runs the driver and waits until its Probe says ready. The socket a
// killed driver left is removed first, so its presence means the new one
// listens.
func (r *rig) start() {
	r.t.Helper()
	if err := os.Remove(r.sock); err != nil && !os.IsNotExist(err) {
		r.t.Fatal(err)
	}
	fmt.Fprintf(r.logf, "\n===== round %d: driver starting at %s\n", r.round, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(r.bin, "--standalone", "--endpoint=unix://"+r.sock, "--node-id=crash-node",
		"--data-dir="+r.dataDir, "--pool-name="+r.pool, "--pool-size=512Mi",
		"--allowed-target-dirs="+r.kubelet, "--v=2")
	cmd.Stdout, cmd.Stderr = r.logf, r.logf
	// A group of its own, so the commands it leaves running when killed
	// can be waited for.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting %s: %v", r.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited

	deadline := time.Now().Add(startLimit)
	for {
		select {
		case <-exited:
			r.t.Fatalf("round %d (seed %d): the driver exited while starting: %v\n%s", r.round, r.seed, cmd.ProcessState, r.logTail(40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("round %d (seed %d): the driver was not ready within %s\n%s", r.round, r.seed, startLimit, r.logTail(40))
		}
		if _, err := os.Stat(r.sock); err != nil {
			continue
		}
		if r.conn == nil {
			conn, err := grpc.NewClient("unix://"+r.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				r.t.Fatal(err)
			}
			r.conn, r.ident, r.ctrl, r.node = conn, csi.NewIdentityClient(conn), csi.NewControllerClient(conn), csi.NewNodeClient(conn)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, err := r.ident.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && (p.GetReady() == nil || p.GetReady().GetValue()) {
			return
		}
	}
}

// kill sends SIGKILL to the driver's process group, which the test made
// for it: the driver and the zfs commands it had running, as a container's
// death takes every process in it. It waits until all are gone, so no
// command of the old driver finishes behind the new one's back.
//
// Killing the driver alone, and waiting for its orphaned commands, was
// tried: in one run of 30 rounds an orphaned zfs command had not ended a
// minute later (zfs-fuse 0.7 did not answer it).
func (r *rig) kill() {
	r.t.Helper()
	pid := r.cmd.Process.Pid
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		r.t.Fatalf("SIGKILL to the driver's process group %d: %v", pid, err)
	}
	<-r.exited
	if err := waitGroupGone(pid, time.Minute); err != nil {
		r.t.Fatal(err)
	}
	fmt.Fprintf(r.logf, "===== round %d: driver killed (SIGKILL) at %s\n", r.round, time.Now().Format(time.RFC3339Nano))
	r.closeConn()
}

func (r *rig) closeConn() {
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
}

// stop ends the driver with SIGTERM, as an operator would, and returns how
// it exited: with nothing staged it exports its pool and exits 0.
func (r *rig) stop(limit time.Duration) error {
	if r.cmd == nil || r.cmd.ProcessState != nil {
		return nil
	}
	r.closeConn()
	pid := r.cmd.Process.Pid
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(limit):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-r.exited
		_ = waitGroupGone(pid, time.Minute)
		return fmt.Errorf("the driver did not stop within %s of SIGTERM; killed", limit)
	}
	_ = waitGroupGone(pid, time.Minute)
	if !r.cmd.ProcessState.Success() {
		return fmt.Errorf("the driver exited with %v", r.cmd.ProcessState)
	}
	return nil
}

// waitGroupGone waits until no process of group pgid is left.
func waitGroupGone(pgid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		left := groupMembers(pgid)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var desc []string
			for _, pid := range left {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
				desc = append(desc, fmt.Sprintf("%d %q (waiting in %s)", pid, strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "), st))
			}
			return fmt.Errorf("processes of the killed driver's group %d are still there after %s: %s", pgid, limit, strings.Join(desc, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupMembers lists the PIDs whose process group is pgid.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

// cleanup stops the driver, unmounts what is left under the test's folder
// (deepest first) and destroys the pool if it is still imported.
func (r *rig) cleanup() {
	if r.t.Failed() {
		r.keepLog()
	}
	if err := r.stop(30 * time.Second); err != nil {
		r.t.Logf("cleanup: %v (log %s)", err, r.logPath)
	}
	r.unmountUnder(r.kubelet)
	if exec.Command("zpool", "list", r.pool).Run() == nil {
		// zfs-fuse refuses to destroy a pool holding a busy snapshot, but
		// exports it; either way the shared daemon lets go of it.
		if out, err := exec.Command("zpool", "destroy", "-f", r.pool).CombinedOutput(); err != nil {
			r.t.Logf("cleanup: zpool destroy -f %s: %v: %s; exporting it instead", r.pool, err, out)
			if out, err := exec.Command("zpool", "export", "-f", r.pool).CombinedOutput(); err != nil {
				r.t.Errorf("cleanup: zpool export -f %s: %v: %s", r.pool, err, out)
			}
		}
	}
	r.unmountUnder(r.work)
	if r.logf != nil {
		r.logf.Close()
	}
}

// unmountUnder detaches every mount at or below dir, deepest first.
func (r *rig) unmountUnder(dir string) {
	ms, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		r.t.Logf("cleanup: %v", err)
		return
	}
	var paths []string
	for _, m := range ms {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") {
			paths = append(paths, m.MountPoint)
		}
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, p := range paths {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			r.t.Logf("cleanup: unmount %s: %v", p, err)
		}
	}
}

// keepLog copies the driver's log to .cache/ in the clone, which outlives
// the test's folder, and says where.
func (r *rig) keepLog() {
	dst := filepath.Join(procs.Root(), ".cache", fmt.Sprintf("crash-driver-%d.log", r.seed))
	b, err := os.ReadFile(r.logPath)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(dst), 0o750)
	}
	if err == nil {
		err = os.WriteFile(dst, b, 0o640)
	}
	if err != nil {
		r.t.Logf("keeping the driver log: %v", err)
		return
	}
	r.t.Logf("driver log (every start, kill and call of every round): %s", dst)
}

// logTail returns the driver log's last n lines.
func (r *rig) logTail(n int) string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "driver log " + r.logPath + ", last lines:\n" + strings.Join(lines, "\n")
}

// call sends one CSI request and returns the response, nil on error.
func (r *rig) call(req proto.Message) (proto.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ctrl, node := r.ctrl, r.node
	if ctrl == nil {
		return nil, errors.New("no connection to the driver")
	}
	switch q := req.(type) {
	case *csi.CreateVolumeRequest:
		return answer(ctrl.CreateVolume(ctx, q))
	case *csi.DeleteVolumeRequest:
		return answer(ctrl.DeleteVolume(ctx, q))
	case *csi.ControllerExpandVolumeRequest:
		return answer(ctrl.ControllerExpandVolume(ctx, q))
	case *csi.CreateSnapshotRequest:
		return answer(ctrl.CreateSnapshot(ctx, q))
	case *csi.DeleteSnapshotRequest:
		return answer(ctrl.DeleteSnapshot(ctx, q))
	case *csi.NodeStageVolumeRequest:
		return answer(node.NodeStageVolume(ctx, q))
	case *csi.NodeUnstageVolumeRequest:
		return answer(node.NodeUnstageVolume(ctx, q))
	case *csi.NodePublishVolumeRequest:
		return answer(node.NodePublishVolume(ctx, q))
	case *csi.NodeUnpublishVolumeRequest:
		return answer(node.NodeUnpublishVolume(ctx, q))
	}
	return nil, fmt.Errorf("no call for %T", req)
}

func answer[T proto.Message](resp T, err error) (proto.Message, error) {
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// listVolumes and listSnapshots page through everything the driver lists.
func (r *rig) listVolumes() ([]*csi.Volume, error) {
	var out []*csi.Volume
	token := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		resp, err := r.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 5, StartingToken: token})
		cancel()
		if err != nil {
			return nil, err
		}
		for _, e := range resp.GetEntries() {
			out = append(out, e.GetVolume())
		}
		if token = resp.GetNextToken(); token == "" {
			return out, nil
		}
	}
}

func (r *rig) listSnapshots() ([]*csi.Snapshot, error) {
	var out []*csi.Snapshot
	token := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		resp, err := r.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 5, StartingToken: token})
		cancel()
		if err != nil {
			return nil, err
		}
		for _, e := range resp.GetEntries() {
			out = append(out, e.GetSnapshot())
		}
		if token = resp.GetNextToken(); token == "" {
			return out, nil
		}
	}
}

func mountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}
