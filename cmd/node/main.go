// Command dotmesh-node is the node plugin: CSI Identity and Node on a unix
// socket for the kubelet, and zfsd, which owns this node's pool.
//
// Modes:
//   - --standalone: also the CSI Controller on the same socket; one node,
//     a local pool, no Kubernetes.
//   - cluster (with --kubeconfig, or in a pod): zfsd's API on TCP with
//     mutual TLS for the controller and peer nodes, the cluster view in the
//     Kubernetes API, and dots that follow their pods from node to node.
//   - neither: one node serving CSI Node, and zfsd's API on a unix socket
//     (--zfsd-endpoint) for a dotmesh-controller on the same host.
//
// In cluster mode, --pool-pods is PV-per-node mode: instead of one pool in
// --data-dir, the node serves the pool of every pool pod the operator runs
// on it. `dotmesh-node hold-pool` is the pool pod's own process.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mesh"
	"github.com/dotmesh-io/dotmesh-csi/pkg/metrics"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/poolpods"
	"github.com/dotmesh-io/dotmesh-csi/pkg/registration"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

var version = "dev"

type options struct {
	endpoint, nodeID, dataDir, poolName, poolSize, mountRoot, hostMI, allowed, defaultSize, driverName string
	standalone, exportOnExit, poolPods                                                                 bool
	hostRoot                                                                                           string
	zfsdEndpoint, zfsdListen, zfsdAdvertise                                                            string
	kubeconfig, namespace, caSecret, tlsCA, tlsCert, tlsKey                                            string
	heartbeat, unreachable, failoverGrace, poolCheck                                                   time.Duration
	metricsAddr, registrationPath, registrationDir, kubeletDir                                         string
}

func main() {
	hostname, _ := os.Hostname()
	var o options
	flag.StringVar(&o.endpoint, "endpoint", "unix:///var/lib/kubelet/plugins/csi.dotmesh.io/csi.sock", "CSI endpoint (unix:///path or tcp://host:port)")
	flag.StringVar(&o.nodeID, "node-id", hostname, "this node's name, reported in NodeGetInfo and as topology "+driver.TopologyKey)
	flag.BoolVar(&o.standalone, "standalone", false, "also serve the CSI Controller on the same endpoint (one node, no Kubernetes)")
	flag.StringVar(&o.dataDir, "data-dir", "/var/lib/dotmesh", "backing folder holding the pool file "+zfsd.PoolFile)
	flag.StringVar(&o.poolName, "pool-name", "", "pool name; default is derived from the backing folder so it names the backing, not the node")
	flag.StringVar(&o.poolSize, "pool-size", "", "size of a new pool file (e.g. 10Gi); default 90% of the backing folder's free space")
	flag.StringVar(&o.mountRoot, "mount-root", "", "where dots are mounted; default DATA-DIR/mnt")
	flag.StringVar(&o.hostMI, "host-mountinfo", "", "mountinfo of a host process (e.g. /proc/1/mountinfo with hostPID): resolve and bind the backing folder's host-visible path")
	flag.StringVar(&o.allowed, "allowed-target-dirs", "/var/lib/kubelet", "comma-separated folders inside which staging and target paths may lie")
	flag.StringVar(&o.defaultSize, "default-volume-size", "1Gi", "capacity of a volume created without a size")
	flag.StringVar(&o.driverName, "driver-name", driver.DefaultName, "CSI driver name")
	flag.StringVar(&o.zfsdEndpoint, "zfsd-endpoint", "", "also serve zfsd's API on this unix socket, for a controller on the same host (unix:///path)")
	flag.StringVar(&o.zfsdListen, "zfsd-listen", ":7455", "cluster mode: zfsd's API on TCP, with mutual TLS")
	flag.StringVar(&o.zfsdAdvertise, "zfsd-advertise", "", "cluster mode: the address peers dial (host:port); default the listen address with this node's IP")
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "cluster mode: kubeconfig file; empty uses the in-cluster config")
	flag.StringVar(&o.namespace, "namespace", "dotmesh-system", "cluster mode: namespace of the CA Secret and of Events")
	flag.StringVar(&o.caSecret, "ca-secret", "dotmesh-ca", "cluster mode: Secret holding the cluster CA")
	flag.StringVar(&o.tlsCA, "tls-ca-file", "", "cluster mode: CA certificate file, instead of the CA Secret")
	flag.StringVar(&o.tlsCert, "tls-cert-file", "", "cluster mode: this node's certificate file")
	flag.StringVar(&o.tlsKey, "tls-key-file", "", "cluster mode: this node's key file")
	flag.DurationVar(&o.heartbeat, "heartbeat", 2*time.Second, "cluster mode: how often this node refreshes its pool in the cluster view")
	flag.DurationVar(&o.unreachable, "unreachable-after", 10*time.Second, "cluster mode: a pool not heard from this long is unreachable; staging its dots elsewhere fails fast")
	flag.DurationVar(&o.poolCheck, "pool-check-interval", 5*time.Second, "how often each pool is checked; a pool whose ZFS restarted or that is no longer imported is imported again and served")
	flag.DurationVar(&o.failoverGrace, "failover-grace", 2*time.Minute, "cluster mode: a master unreachable this long is replaced by its most up-to-date replica")
	flag.StringVar(&o.metricsAddr, "metrics-address", "", "serve Prometheus /metrics and /healthz here (host:port); empty disables them")
	flag.StringVar(&o.registrationPath, "kubelet-registration-path", "", "the CSI socket's path as the kubelet sees it; when set, register with the kubelet's plugin watcher")
	flag.StringVar(&o.hostRoot, "host-root", "", "the host's / as mounted in this container; zfs and zpool then run chrooted into it, so they are the host's own (match its kernel module)")
	flag.BoolVar(&o.exportOnExit, "export-on-exit", true, "export the pool when this process stops; a node plugin pod sets false, so a restart leaves mounted volumes serving")
	flag.StringVar(&o.registrationDir, "registration-dir", "/var/lib/kubelet/plugins_registry", "the kubelet's plugin watcher folder")
	flag.BoolVar(&o.poolPods, "pool-pods", false, "cluster mode, PV-per-node: serve the pools of the operator's pool pods on this node (bound under DATA-DIR/pools) instead of a pool in --data-dir")
	flag.StringVar(&o.kubeletDir, "kubelet-dir", "/var/lib/kubelet", "the kubelet's root folder, at the same path here as on the host (--pool-pods)")
	klog.InitFlags(nil)
	if len(os.Args) > 1 && os.Args[1] == "hold-pool" {
		os.Exit(holdPool(os.Args[2:]))
	}
	flag.Parse()
	os.Exit(run(o))
}

func run(o options) int {
	size, err := quantity(o.poolSize)
	if err != nil {
		klog.ErrorS(err, "bad --pool-size")
		return 2
	}
	defSize, err := quantity(o.defaultSize)
	if err != nil {
		klog.ErrorS(err, "bad --default-volume-size")
		return 2
	}
	dir, err := filepath.Abs(o.dataDir)
	if err != nil {
		klog.ErrorS(err, "bad --data-dir")
		return 2
	}
	if o.poolName == "" {
		o.poolName = DefaultPoolName(dir)
	}

	clustered := !o.standalone && (o.kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "")
	if o.poolPods && !clustered {
		klog.ErrorS(nil, "--pool-pods needs cluster mode (a kubeconfig or a pod), and not --standalone")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	zc := zfs.New(zfs.ExecRunner{Root: o.hostRoot}, zfs.Options{})
	pools := zfsd.NewSet()
	var store driver.Store
	if !o.poolPods {
		openCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		pool, err := zfsd.Open(openCtx, zc, zfsd.Config{Name: o.poolName, Dir: dir,
			HostMountinfo: o.hostMI, Size: size, MountRoot: o.mountRoot, Node: o.nodeID})
		cancel()
		if err != nil {
			klog.ErrorS(err, "opening pool", "pool", o.poolName, "dir", dir)
			return 1
		}
		pools.Add(pool)
		store = pool
	}

	go pools.Monitor(ctx, o.poolCheck)

	var eps []driver.Endpoint
	var peers *remote.Dialer
	if clustered {
		ms, zs, cs, dialer, err := clusterMode(ctx, o, pools)
		if err != nil {
			klog.ErrorS(err, "joining the cluster")
			closePools(pools)
			return 1
		}
		store, peers = ms, dialer
		eps = append(eps, driver.Endpoint{Address: "tcp://" + o.zfsdListen, Server: zs})
		go ms.Heartbeat(ctx, o.nodeID, o.heartbeat)
		if o.poolPods {
			w := poolpods.New(poolpods.Config{Client: cs, Namespace: o.namespace, Node: o.nodeID, KubeletDir: o.kubeletDir,
				PoolsDir: filepath.Join(dir, "pools"), MountDir: filepath.Join(dir, "mnt"), Pools: pools, Fence: ms,
				Open: func(ctx context.Context, cfg zfsd.Config) (*zfsd.Pool, error) { return zfsd.Open(ctx, zc, cfg) }})
			go w.Run(ctx)
		}
	}
	d := driver.New(driver.Config{Name: o.driverName, Version: version, NodeID: o.nodeID,
		AllowedTargetDirs: splitList(o.allowed), DefaultCapacity: defSize}, store)
	m := metrics.New()
	m.WatchPools(pools.Pools)
	eps = append(eps, driver.Endpoint{Address: o.endpoint, Server: driver.NewServer(d, driver.Services{Controller: o.standalone, Node: true}, m.Interceptor())})
	if o.registrationPath != "" {
		if err := registration.Check(o.registrationDir); err != nil {
			klog.ErrorS(err, "kubelet plugin registration")
			closePools(pools)
			return 1
		}
		reg := registration.New(o.driverName, o.registrationPath)
		eps = append(eps, driver.Endpoint{Address: "unix://" + registration.SocketPath(o.registrationDir, o.driverName), Server: reg.NewGRPC()})
	}
	if o.metricsAddr != "" {
		go func() {
			if err := m.Serve(ctx, o.metricsAddr, func(c context.Context) error { _, err := pools.Pools(c); return err }); err != nil {
				klog.ErrorS(err, "metrics endpoint")
			}
		}()
	}
	if o.zfsdEndpoint != "" {
		zs := grpc.NewServer(remote.ServerOptions(nil)...)
		api.RegisterZfsdServer(zs, remote.NewServer(pools, peers))
		eps = append(eps, driver.Endpoint{Address: o.zfsdEndpoint, Server: zs})
	}
	klog.InfoS("starting", "standalone", o.standalone, "node", o.nodeID, "pool", o.poolName, "poolPods", o.poolPods)
	code := 0
	if err := driver.Serve(ctx, 20*time.Second, eps...); err != nil {
		code = 1
	}
	if peers != nil {
		peers.Close()
	}
	// Export only after every server has stopped: no call is using the pool.
	// A plugin pod that is only restarting leaves the pool imported: export
	// would take dots away from pods that are still running on them, and
	// the next start adopts the imported pool.
	if !o.exportOnExit {
		klog.InfoS("leaving pools imported (--export-on-exit=false)")
	} else if err := closePools(pools); err != nil {
		code = 1
	}
	klog.Flush()
	return code
}

// clusterMode joins the cluster: an identity from the cluster CA, zfsd's
// API on TCP with mutual TLS, and the mesh over the Kubernetes view.
func clusterMode(ctx context.Context, o options, pools *zfsd.Set) (*mesh.Store, *grpc.Server, kubernetes.Interface, *remote.Dialer, error) {
	cfg, err := cluster.RestConfig(o.kubeconfig)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("kubeconfig: %w", err)
	}
	view, err := cluster.NewKube(cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	advertise, err := advertiseAddress(o.zfsdListen, o.zfsdAdvertise)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	host, _, _ := net.SplitHostPort(advertise)
	var id *pki.Identity
	if o.tlsCA != "" {
		id, err = pki.LoadFiles(o.tlsCA, o.tlsCert, o.tlsKey)
	} else {
		id, err = pki.ClusterIdentity(ctx, cs, o.namespace, o.caSecret, "node:"+o.nodeID, host)
	}
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("zfsd identity: %w", err)
	}
	peers := remote.NewDialer(id)
	zs := grpc.NewServer(remote.ServerOptions(id)...)
	api.RegisterZfsdServer(zs, remote.NewServer(pools, peers))
	ms := mesh.New(mesh.Config{View: view, Peers: peers, Local: pools, LocalAddress: advertise,
		Unreachable: o.unreachable, FailoverGrace: o.failoverGrace})
	klog.InfoS("cluster mode", "zfsd", advertise, "failoverGrace", o.failoverGrace)
	return ms, zs, cs, peers, nil
}

// advertiseAddress is what peers dial: the flag, or the listen address
// with the first non-loopback IP of this node.
func advertiseAddress(listen, advertise string) (string, error) {
	if advertise != "" {
		return advertise, nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("--zfsd-listen %q: %w", listen, err)
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		return listen, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return net.JoinHostPort(ipn.IP.String(), port), nil
		}
	}
	return "", fmt.Errorf("no address to advertise for zfsd; set --zfsd-advertise")
}

// DefaultPoolName names a pool after its backing folder.
func DefaultPoolName(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return "dotmesh-" + hex.EncodeToString(h[:4])
}

func closePools(pools *zfsd.Set) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, p := range pools.List() {
		if err := p.Close(ctx); err != nil {
			klog.ErrorS(err, "pool left imported", "pool", p.Name())
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func quantity(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return q.Value(), nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
