// Package multinode runs several ZFS "nodes" on one machine for end-to-end
// tests, each in its own mount and network namespace with its own zfs-fuse
// daemon and its own backing disk (ext4 in a loop-mounted file), beside a
// real etcd and kube-apiserver in a network namespace of their own. The
// test process stays in the root namespaces; it reaches the API server
// through sockets made inside the control plane's namespace, and drives
// the CSI plugins through their unix sockets. Everything it starts it stops
// by PID, and everything it mounts it unmounts, even when a test fails.
package multinode

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/dotmesh-io/dotmesh-csi/e2e/procs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

// Namespace holds the CA Secret and Events in the harness cluster.
const Namespace = "dotmesh-system"

// APIServiceIP is the "kubernetes" Service's address (the first of
// 10.0.0.0/24), which in-cluster clients dial.
const APIServiceIP = "10.0.0.1"

// Harness is a control plane and its nodes.
type Harness struct {
	ID         string
	Dir        string
	Subnet     string // "10.231.N" : the control plane is .1, node i is .(10+i)
	CPNetns    string // path under /run/netns
	Kubeconfig string
	Rest       *rest.Config
	Client     kubernetes.Interface
	Nodes      []*Node
	Bin        map[string]string // built project binaries by cmd name
	Kube       bool              // nodes run containerd and a kubelet (Options.Kubernetes)
	ca         *pki.CA
	t          testing.TB
	opts       Options
	loopDisks  string      // the loop disks' shared folder, once StartLoopDisks ran
	controller *procs.Proc // the last StartController's
}

// Options size a harness.
type Options struct {
	Nodes    int
	DiskSize int64 // each node's backing disk; default 2 GiB
	// Kubernetes adds kube-controller-manager and kube-scheduler to the
	// control plane, and containerd and a kubelet to every node, with the
	// images in Images imported; the driver then runs as pods (e2e/k8s).
	Kubernetes bool
	Images     []string // docker-archive tarballs every node imports
}

// New starts a control plane and opts.Nodes nodes, and builds the
// project's binaries.
func New(t testing.TB, opts Options) *Harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the multi-node harness needs root; CI runs as root")
	}
	if opts.DiskSize == 0 {
		opts.DiskSize = 2 << 30
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)[:5]
	h := &Harness{ID: id, Dir: filepath.Join(os.TempDir(), "dotmesh-mn-"+id), Subnet: fmt.Sprintf("10.231.%d", b[2]), t: t,
		Bin: map[string]string{}, Kube: opts.Kubernetes, opts: opts}
	if err := os.MkdirAll(h.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("KEEP_HARNESS") == "" {
			_ = os.RemoveAll(h.Dir)
		} else {
			t.Logf("harness logs kept in %s", h.Dir)
		}
	})
	for _, c := range []string{"node", "controller"} {
		h.Bin[c] = procs.Build(t, h.Dir, c)
	}
	start := time.Now()
	h.startControlPlane()
	if h.Kube {
		h.startKubeControllers()
	}
	t.Logf("control plane ready in %s", time.Since(start).Round(time.Millisecond))
	for range opts.Nodes {
		h.AddNode()
	}
	return h
}

// AddNode starts one more node (a machine joining the cluster), named
// after its index, which is never reused.
func (h *Harness) AddNode() *Node {
	start := time.Now()
	n := h.addNode(len(h.Nodes), h.opts.DiskSize)
	if h.Kube {
		n.startKubelet(h.opts.Images)
	}
	if h.loopDisks != "" {
		n.startLoopDisk()
	}
	h.Nodes = append(h.Nodes, n)
	h.t.Logf("%s ready in %s", n.Name, time.Since(start).Round(time.Millisecond))
	return n
}

func (h *Harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *Harness) run(args ...string) string {
	h.t.Helper()
	out, err := sh(h.ctx(), args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// kubeBinary returns a cached Kubernetes or etcd binary, building it on
// first use (e2e/kube/build.sh).
func (h *Harness) kubeBinary(name, version string) string {
	h.t.Helper()
	build := filepath.Join(procs.Root(), "e2e", "kube", "build.sh")
	dir, err := exec.Command(build, "--bin-dir").Output()
	if err != nil {
		h.t.Fatalf("finding the Kubernetes binaries' cache: %v", err)
	}
	p := filepath.Join(strings.TrimSpace(string(dir)), name+"-"+version)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	cmd := exec.Command(build, name)
	if out, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	return p
}

func (h *Harness) startControlPlane() {
	t := h.t
	cp := "dmcp-" + h.ID
	h.run("ip", "netns", "add", cp)
	h.CPNetns = "/run/netns/" + cp
	t.Cleanup(func() { _, _ = sh(context.Background(), "ip", "netns", "del", cp) })
	in := []string{"nsenter", "--net=" + h.CPNetns}
	h.run(append(in, "ip", "link", "set", "lo", "up")...)
	h.run(append(in, "ip", "link", "add", "br0", "type", "bridge")...)
	h.run(append(in, "ip", "addr", "add", h.Subnet+".1/24", "dev", "br0")...)
	h.run(append(in, "ip", "link", "set", "br0", "up")...)
	// The API server also answers on the "kubernetes" Service's address,
	// on its port, so in-cluster clients in pods on the node network work
	// without kube-proxy: each node routes this one address here.
	h.run(append(in, "ip", "addr", "add", APIServiceIP+"/32", "dev", "lo")...)

	pkiDir := filepath.Join(h.Dir, "pki")
	files := h.writePKI(pkiDir)
	etcd := h.kubeBinary("etcd", "v3.6.16")
	apiserver := h.kubeBinary("kube-apiserver", "v1.37.2")
	procs.Start(t, filepath.Join(h.Dir, "etcd.log"), "nsenter", append(in[1:2], etcd,
		"--data-dir="+filepath.Join(h.Dir, "etcd"), "--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379", "--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380", "--initial-cluster=default=http://127.0.0.1:2380",
		"--listen-metrics-urls=http://127.0.0.1:2381")...)
	procs.Start(t, filepath.Join(h.Dir, "kube-apiserver.log"), "nsenter", append(in[1:2], apiserver,
		"--etcd-servers=http://127.0.0.1:2379", "--bind-address=0.0.0.0", "--secure-port=443",
		"--advertise-address="+h.Subnet+".1", "--endpoint-reconciler-type=none",
		"--tls-cert-file="+files["apiserver.crt"], "--tls-private-key-file="+files["apiserver.key"],
		"--client-ca-file="+files["ca.crt"], "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+files["sa.pub"], "--service-account-signing-key-file="+files["sa.key"],
		"--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--kubelet-client-certificate="+files["admin.crt"], "--kubelet-client-key="+files["admin.key"],
		"--kubelet-preferred-address-types=InternalIP")...)

	h.Kubeconfig = filepath.Join(h.Dir, "admin.kubeconfig")
	h.writeKubeconfig(h.Kubeconfig, files)
	cfg, err := cluster.RestConfig(h.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dial = dialIn(h.CPNetns)
	cfg.Timeout = 30 * time.Second
	h.Rest = cfg
	h.Client, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		raw, err := h.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && strings.TrimSpace(string(raw)) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(h.Dir, "kube-apiserver.log"))
			t.Fatalf("kube-apiserver not ready: %v\n%s", err, tail(log, 30))
		}
		time.Sleep(300 * time.Millisecond)
	}
	_, err = h.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := cluster.EnsureCRDs(h.ctx(), cfg); err != nil {
		t.Fatal(err)
	}
	h.applyRBAC()
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writePKI makes the cluster's certificates with the project's own pki
// package: a CA, the API server's serving certificate, an admin client
// (group system:masters) and the service-account key pair.
func (h *Harness) writePKI(dir string) map[string]string {
	t := h.t
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("dotmesh-e2e kubernetes CA")
	if err != nil {
		t.Fatal(err)
	}
	h.ca = ca
	files := map[string]string{}
	write := func(name string, data []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = p
	}
	write("ca.crt", ca.CertPEM)
	cert, key, err := ca.IssueFor(pkix.Name{CommonName: "kube-apiserver"}, h.Subnet+".1", APIServiceIP, "127.0.0.1", "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	write("apiserver.crt", cert)
	write("apiserver.key", key)
	cert, key, err = ca.IssueFor(pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}})
	if err != nil {
		t.Fatal(err)
	}
	write("admin.crt", cert)
	write("admin.key", key)
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(sa)
	write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	pub, _ := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	return files
}

func (h *Harness) writeKubeconfig(path string, files map[string]string) {
	read := func(k string) []byte {
		b, err := os.ReadFile(files[k])
		if err != nil {
			h.t.Fatal(err)
		}
		return b
	}
	h.writeKubeconfigFor(path, "admin", read("ca.crt"), read("admin.crt"), read("admin.key"))
}

// writeKubeconfigFor writes a kubeconfig for the API server's address on
// the harness bridge, authenticating with a client certificate.
func (h *Harness) writeKubeconfigFor(path, user string, caPEM, certPEM, keyPEM []byte) {
	h.writeKubeconfigWith(path, user, caPEM, fmt.Sprintf("client-certificate-data: %s\n    client-key-data: %s", b64(string(certPEM)), b64(string(keyPEM))))
}

// writeKubeconfigWith writes a kubeconfig for the API server's address on the
// harness bridge; credentials are the user's fields, already indented.
func (h *Harness) writeKubeconfigWith(path, user string, caPEM []byte, credentials string) {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://%s.1:443
    certificate-authority-data: %s
users:
- name: %s
  user:
    %s
contexts:
- name: e2e
  context: {cluster: e2e, user: %s}
current-context: e2e
`, h.Subnet, b64(string(caPEM)), user, credentials, user)
	// It holds a key or a token: for root's eyes only.
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// StartController runs the project's controller in the control plane's
// network namespace and returns its CSI socket.
func (h *Harness) StartController(args ...string) (*procs.Proc, string) {
	sock := filepath.Join(h.Dir, "controller.sock")
	p := procs.Start(h.t, filepath.Join(h.Dir, "controller.log"), "nsenter", append([]string{"--net=" + h.CPNetns, h.Bin["controller"],
		"--kubeconfig=" + h.Kubeconfig, "--endpoint=unix://" + sock, "--namespace=" + Namespace, "--v=2"}, args...)...)
	p.WaitForSocket(h.t, sock, time.Minute)
	h.controller = p
	// The nodes' zfsd certificates come from the controller's signer: wait
	// for them, so a test's first call does not race the signing.
	for _, n := range h.Nodes {
		if n.zfsdTLS && !n.dead && n.Plugin != nil && n.Plugin.Running() {
			n.WaitZfsdCertificate(time.Minute)
		}
	}
	return p, sock
}

func signal(pid int, sig syscall.Signal) { _ = syscall.Kill(pid, sig) }
