package multinode

import (
	"context"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dotmesh-io/dotmesh-csi/e2e/procs"
)

// KubeVersion is the Kubernetes the harness builds and runs.
const KubeVersion = "v1.37.2"

// startKubeControllers adds kube-controller-manager (PV binding, service
// account tokens, the root CA ConfigMap pods mount) and kube-scheduler to
// the control plane's namespace.
func (h *Harness) startKubeControllers() {
	t := h.t
	pkiDir := filepath.Join(h.Dir, "pki")
	in := "--net=" + h.CPNetns
	procs.Start(t, filepath.Join(h.Dir, "kube-controller-manager.log"), "nsenter", in, h.kubeBinary("kube-controller-manager", KubeVersion),
		"--kubeconfig="+h.Kubeconfig, "--authentication-kubeconfig="+h.Kubeconfig, "--authorization-kubeconfig="+h.Kubeconfig,
		"--bind-address=127.0.0.1", "--leader-elect=false", "--use-service-account-credentials=true",
		"--service-account-private-key-file="+filepath.Join(pkiDir, "sa.key"), "--root-ca-file="+filepath.Join(pkiDir, "ca.crt"),
		"--service-cluster-ip-range=10.0.0.0/24", "--allocate-node-cidrs=false")
	procs.Start(t, filepath.Join(h.Dir, "kube-scheduler.log"), "nsenter", in, h.kubeBinary("kube-scheduler", KubeVersion),
		"--kubeconfig="+h.Kubeconfig, "--authentication-kubeconfig="+h.Kubeconfig, "--authorization-kubeconfig="+h.Kubeconfig,
		"--bind-address=127.0.0.1", "--leader-elect=false")
}

// Kubectl runs the harness's own kubectl (the cluster's version) as admin,
// from inside the control plane's network namespace.
func (h *Harness) Kubectl(ctx context.Context, args ...string) (string, error) {
	return sh(ctx, append([]string{"nsenter", "--net=" + h.CPNetns, h.kubeBinary("kubectl", KubeVersion), "--kubeconfig=" + h.Kubeconfig}, args...)...)
}

// Node paths the kubelet, containerd and CNI use whatever their flags say,
// so each node gets private copies bound over them inside its namespace.
var nodePrivatePaths = []string{"/var/lib/kubelet", "/run/containerd", "/run/netns", "/var/log/pods", "/var/log/containers", "/var/lib/dotmesh"}

// startKubelet turns the node into a Kubernetes node: its mount namespace
// gets shared propagation (the kubelet and the CSI plugin need
// Bidirectional mounts), containerd and a kubelet start inside it, and
// images are imported so nothing is pulled.
func (n *Node) startKubelet(images []string) {
	t := n.h.t
	kd := filepath.Join(n.Dir, "k8s")
	n.cgroupRoot = fmt.Sprintf("/dmk-%s-%s", n.h.ID, n.Name)
	t.Cleanup(n.stopKubelet)

	// Shared inside this namespace only: it was made private, so nothing
	// propagates back to the machine.
	n.mustExec("mount", "--make-rshared", "/")
	// A namespace made after `ip netns add` inherited /run/netns as a
	// shared mount; one node must not keep another's namespaces alive.
	_, _ = n.Exec(n.h.ctx(), "umount", "-l", "/run/netns")
	for _, p := range nodePrivatePaths {
		src := filepath.Join(kd, "fs", strings.ReplaceAll(strings.TrimPrefix(p, "/"), "/", "-"))
		if p == "/var/lib/dotmesh" {
			// The pool lives on the node's own disk.
			src = filepath.Join(n.DiskDir, "dotmesh")
		}
		n.mustExec("mkdir", "-p", src) // inside: the disk is mounted there only
		if _, err := os.Stat(p); os.IsNotExist(err) {
			// The mount point is made on the machine's filesystem; the
			// node's teardown removes it again.
			mkdirs(t, p)
			n.madeDirs = append(n.madeDirs, p)
		}
		n.mustExec("mount", "--bind", src, p)
	}
	if _, err := os.Stat("/etc/machine-id"); err == nil {
		machineID := filepath.Join(kd, "machine-id")
		sum := sha256.Sum256([]byte(n.h.ID + n.Name))
		writeFile(t, machineID, hex.EncodeToString(sum[:16])+"\n")
		n.mustExec("mount", "--bind", machineID, "/etc/machine-id")
	}
	// The "kubernetes" Service address leads to the API server.
	n.mustExec("ip", "route", "add", APIServiceIP+"/32", "via", n.h.Subnet+".1")

	// Each node's pods in cgroups of its own, or kubelets kill each
	// other's pods as orphans.
	for _, hier := range cgroupHierarchies() {
		mkdirs(t, filepath.Join(hier, n.cgroupRoot))
	}

	sock := filepath.Join(kd, "containerd.sock")
	writeFile(t, filepath.Join(kd, "cni", "10-node.conflist"), fmt.Sprintf(`{
  "cniVersion": "0.4.0", "name": "dmk", "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.%d.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
             "dataDir": %q}}]}
`, n.Index, filepath.Join(kd, "cni-ipam")))
	writeFile(t, filepath.Join(kd, "containerd.toml"), fmt.Sprintf(`version = 2
root = %q
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # Root here lacks CAP_SYS_RESOURCE: runc can't set negative oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, filepath.Join(kd, "containerd"), sock, filepath.Join(kd, "cni")))
	n.Containerd = n.Start("containerd", "containerd", "--config", filepath.Join(kd, "containerd.toml"))
	n.Containerd.WaitForSocket(t, sock, time.Minute)
	n.containerdSock = sock
	for _, img := range images {
		if _, err := n.Exec(n.h.ctx(), "ctr", "-a", sock, "-n", "k8s.io", "images", "import", img); err != nil {
			t.Fatalf("%s: importing %s: %v", n.Name, img, err)
		}
	}

	cert, key, err := n.h.ca.IssueFor(pkix.Name{CommonName: "system:node:" + n.Name, Organization: []string{"system:nodes"}})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(n.h.Dir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(kd, "kubelet.kubeconfig")
	n.h.writeKubeconfigFor(kubeconfig, "system:node:"+n.Name, caPEM, cert, key)
	writeFile(t, filepath.Join(kd, "kubelet.yaml"), fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: %s
failCgroupV1: false
failSwapOn: false
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`, n.IP, filepath.Join(n.h.Dir, "pki", "ca.crt"), sock, n.cgroupRoot))
	n.kubeletArgs = []string{n.h.kubeBinary("kubelet", KubeVersion), "--config=" + filepath.Join(kd, "kubelet.yaml"),
		"--kubeconfig=" + kubeconfig, "--root-dir=/var/lib/kubelet", "--cert-dir=/var/lib/kubelet/pki",
		"--hostname-override=" + n.Name, "--node-ip=" + n.IP, "--v=2"}
	n.StartKubelet()
}

// StartKubelet (re)starts the node's kubelet and waits until the node is
// Ready: after StopKubelet, the node rejoins with its containers as they are.
func (n *Node) StartKubelet() {
	n.Kubelet = n.Start("kubelet", n.kubeletArgs...)
	n.WaitReady(2 * time.Minute)
}

// StopKubelet stops only the kubelet: the node's containers run on, as on
// a machine whose kubelet is being upgraded.
func (n *Node) StopKubelet() {
	if n.Kubelet != nil {
		_ = n.Kubelet.Stop(20 * time.Second)
	}
}

// Remove takes the node away for good, as a cloud replacing a machine
// does: the kubelet, every container and process and zfs-fuse stop at once
// (nothing is exported or unmounted cleanly), the mounts go with the
// node's mount namespace, and its Node object is deleted.
func (n *Node) Remove() {
	n.stopKubelet()
	if n.LoopDisk != nil {
		_ = n.LoopDisk.Cmd.Process.Kill()
	}
	n.Kill()
	if n.Holder > 0 {
		signal(n.Holder, syscall.SIGKILL)
	}
	n.DeleteNodeObject()
}

// DeleteNodeObject deletes the node's Node object, as `kubectl delete node`.
func (n *Node) DeleteNodeObject() {
	err := n.h.Client.CoreV1().Nodes().Delete(n.h.ctx(), n.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		n.h.t.Fatalf("deleting Node %s: %v", n.Name, err)
	}
}

// WaitReady waits until the node's Node object says Ready.
func (n *Node) WaitReady(limit time.Duration) {
	n.h.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		node, err := n.h.Client.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
		if err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(n.Dir, "kubelet.log"))
			n.h.t.Fatalf("%s not Ready within %s (%v)\n%s", n.Name, limit, err, tail(log, 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stopKubelet stops the kubelet, every container of the node (they live
// in the node's cgroups), containerd and its shims, and removes the
// node's cgroups. The namespace teardown then takes the mounts.
func (n *Node) stopKubelet() {
	if n.Kubelet != nil {
		_ = n.Kubelet.Stop(20 * time.Second)
	}
	for range 3 {
		pids := cgroupPIDs(n.cgroupRoot)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			signal(pid, syscall.SIGKILL)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if n.Containerd != nil {
		_ = n.Containerd.Stop(20 * time.Second)
	}
	// Shims outlive containerd by design; ours name our socket.
	if n.containerdSock != "" {
		for _, pid := range pidsWithArg("containerd-shim", n.containerdSock) {
			signal(pid, syscall.SIGKILL)
		}
	}
	for _, hier := range cgroupHierarchies() {
		removeCgroupTree(filepath.Join(hier, n.cgroupRoot))
	}
}

func cgroupHierarchies() []string {
	var out []string
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// cgroupPIDs lists every process below root in any hierarchy.
func cgroupPIDs(root string) []int {
	if root == "" {
		return nil
	}
	seen := map[int]bool{}
	for _, hier := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(hier, root), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	return out
}

func removeCgroupTree(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = syscall.Rmdir(dirs[i])
	}
}

// pidsWithArg finds processes whose command starts with prog and has arg
// among its arguments.
func pidsWithArg(prog, arg string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if !strings.Contains(filepath.Base(args[0]), prog) {
			continue
		}
		for _, a := range args[1:] {
			if a == arg {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func mkdirs(t interface{ Fatal(...any) }, p string) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t interface{ Fatal(...any) }, p, content string) {
	mkdirs(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
