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
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/internal/cmdmain"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/enroll"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mesh"
	"github.com/dotmesh-io/dotmesh-csi/pkg/metrics"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/poolpods"
	"github.com/dotmesh-io/dotmesh-csi/pkg/registration"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/authz"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hold-pool" {
		os.Exit(holdPool(os.Args[2:]))
	}
	o := &Options{InPod: os.Getenv("KUBERNETES_SERVICE_HOST") != ""}
	cmdmain.Run("dotmesh-node", o, func(ctx context.Context) int { return run(ctx, *o) })
}

// run serves until ctx ends, then exports the pools (unless
// --export-on-exit=false) and returns the exit code.
func run(ctx context.Context, o Options) int {
	pools := zfsd.NewSet()
	n, err := start(ctx, o, pools)
	if err != nil {
		klog.ErrorS(err, "starting", "node", o.NodeID, "mode", o.Mode())
		closePools(pools)
		return 1
	}
	klog.InfoS("starting", "mode", o.Mode(), "node", o.NodeID, "pool", o.PoolName, "poolPods", o.PoolPods)
	code := 0
	if err := driver.Serve(ctx, 20*time.Second, n.endpoints...); err != nil {
		code = 1
	}
	if n.peers != nil {
		n.peers.Close()
	}
	// Export only after every server has stopped: no call is using the pool.
	// A plugin pod that is only restarting leaves the pool imported: export
	// would take dots away from pods that are still running on them, and
	// the next start adopts the imported pool.
	if !o.ExportOnExit {
		klog.InfoS("leaving pools imported (--export-on-exit=false)")
	} else if err := closePools(pools); err != nil {
		code = 1
	}
	return code
}

// node is what start set going: the servers to run, and the dialer of
// peer nodes to close after them (cluster mode).
type node struct {
	endpoints []driver.Endpoint
	peers     *remote.Dialer
}

// start opens this node's pool (or, with --pool-pods, watches the pool
// pods), joins the cluster in cluster mode, and returns what to serve.
func start(ctx context.Context, o Options, pools *zfsd.Set) (node, error) {
	var n node
	zc := zfs.New(zfs.ExecRunner{Root: o.HostRoot}, zfs.Options{})
	var store driver.Store
	if !o.PoolPods {
		pool, err := openPool(ctx, zc, o)
		if err != nil {
			return n, err
		}
		pools.Add(pool)
		store = pool
	}
	go pools.Monitor(ctx, o.PoolCheckInterval)
	if o.Mode() == modeCluster {
		c, err := joinCluster(ctx, o, pools)
		if err != nil {
			return n, fmt.Errorf("joining the cluster: %w", err)
		}
		store, n.peers = c.store, c.peers
		n.endpoints = append(n.endpoints, driver.Endpoint{Address: "tcp://" + o.ZfsdListen, Server: c.server})
		go c.store.Heartbeat(ctx, o.NodeID, o.Heartbeat)
		if o.PoolPods {
			go poolpods.New(poolpods.Config{Client: c.client, Namespace: o.Namespace, Node: o.NodeID, KubeletDir: o.KubeletDir,
				PoolsDir: filepath.Join(o.dataDir, "pools"), MountDir: filepath.Join(o.dataDir, "mnt"), Pools: pools, Fence: c.store,
				Open: func(ctx context.Context, cfg zfsd.Config) (*zfsd.Pool, error) { return zfsd.Open(ctx, zc, cfg) }}).Run(ctx)
		}
	}
	eps, err := serviceEndpoints(ctx, o, store, pools, n.peers)
	n.endpoints = append(n.endpoints, eps...)
	return n, err
}

// openPool imports or creates the pool in --data-dir.
func openPool(ctx context.Context, zc *zfs.Client, o Options) (*zfsd.Pool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pool, err := zfsd.Open(ctx, zc, zfsd.Config{Name: o.PoolName, Dir: o.dataDir,
		HostMountinfo: o.HostMountinfo, Size: o.poolBytes, MountRoot: o.MountRoot, Node: o.NodeID})
	if err != nil {
		return nil, fmt.Errorf("opening pool %s in %s: %w", o.PoolName, o.dataDir, err)
	}
	return pool, nil
}

// serviceEndpoints are the CSI socket, and as the flags ask the kubelet's
// registration socket, the metrics endpoint and zfsd's unix socket.
func serviceEndpoints(ctx context.Context, o Options, store driver.Store, pools *zfsd.Set, peers *remote.Dialer) ([]driver.Endpoint, error) {
	d := driver.New(driver.Config{Name: o.DriverName, Version: version, NodeID: o.NodeID,
		AllowedTargetDirs: o.allowedDirs, DefaultCapacity: o.defaultCapacity}, store)
	m := metrics.New()
	m.WatchPools(pools.Pools)
	eps := []driver.Endpoint{{Address: o.Endpoint,
		Server: driver.NewServer(d, driver.Services{Controller: o.Mode() == modeStandalone, Node: true}, m.Interceptor())}}
	if o.RegistrationPath != "" {
		if err := registration.Check(o.RegistrationDir); err != nil {
			return nil, fmt.Errorf("kubelet plugin registration: %w", err)
		}
		reg := registration.New(o.DriverName, o.RegistrationPath)
		eps = append(eps, driver.Endpoint{Address: "unix://" + registration.SocketPath(o.RegistrationDir, o.DriverName), Server: reg.NewGRPC()})
	}
	if o.MetricsAddress != "" {
		go func() {
			if err := m.Serve(ctx, o.MetricsAddress, func(c context.Context) error { _, err := pools.Pools(c); return err }); err != nil {
				klog.ErrorS(err, "metrics endpoint")
			}
		}()
	}
	if o.ZfsdEndpoint != "" {
		zs := grpc.NewServer(remote.ServerOptions(nil, authz.New(authz.Config{Pools: authz.PoolNames(pools)}))...)
		api.RegisterZfsdServer(zs, remote.NewServer(pools, peers))
		eps = append(eps, driver.Endpoint{Address: o.ZfsdEndpoint, Server: zs})
	}
	return eps, nil
}

// joined is what joining the cluster gives a node.
type joined struct {
	store  *mesh.Store
	server *grpc.Server // zfsd's API for the controller and peers, with mutual TLS
	client kubernetes.Interface
	peers  *remote.Dialer
}

// joinCluster joins the cluster: an identity signed by the cluster CA, zfsd's
// API on TCP with mutual TLS, and the mesh over the Kubernetes view.
func joinCluster(ctx context.Context, o Options, pools *zfsd.Set) (joined, error) {
	cfg, err := cluster.RestConfig(o.Kubeconfig)
	if err != nil {
		return joined{}, fmt.Errorf("kubeconfig: %w", err)
	}
	view, err := cluster.NewKube(cfg)
	if err != nil {
		return joined{}, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return joined{}, err
	}
	advertise, err := advertiseAddress(o.ZfsdListen, o.ZfsdAdvertise)
	if err != nil {
		return joined{}, err
	}
	host, _, _ := net.SplitHostPort(advertise)
	id, err := zfsdIdentity(ctx, o, cs, host)
	if err != nil {
		return joined{}, fmt.Errorf("zfsd identity: %w", err)
	}
	peers := remote.NewDialer(id)
	zs := grpc.NewServer(remote.ServerOptions(id, authz.New(authz.Config{View: view, Pools: authz.PoolNames(pools)}))...)
	api.RegisterZfsdServer(zs, remote.NewServer(pools, peers))
	ms := mesh.New(mesh.Config{View: view, Peers: peers, Local: pools, LocalAddress: advertise,
		Unreachable: o.Unreachable, FailoverGrace: o.FailoverGrace})
	klog.InfoS("cluster mode", "zfsd", advertise, "failoverGrace", o.FailoverGrace)
	return joined{store: ms, server: zs, client: cs, peers: peers}, nil
}

// zfsdIdentity is the certificate zfsd serves and dials with: the files
// given, or one the controller signs through a CertificateSigningRequest
// and renews as it ages. Asking does not hold up the start: the CSI
// services run meanwhile, and zfsd refuses handshakes until the first
// certificate comes.
func zfsdIdentity(ctx context.Context, o Options, cs kubernetes.Interface, host string) (pki.Source, error) {
	if o.TLSCA != "" {
		return pki.LoadFiles(o.TLSCA, o.TLSCert, o.TLSKey)
	}
	holder := &pki.Holder{}
	go pki.Keep(ctx, holder, pki.NodeName(o.NodeID), func(ctx context.Context) (*pki.Identity, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		return enroll.Request(ctx, enroll.Config{Client: cs, Node: o.NodeID, Hosts: []string{host}})
	})
	return holder, nil
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
