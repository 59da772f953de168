// Command dotmesh-node is the node plugin: CSI Identity and Node on a unix
// socket for the kubelet, and zfsd, which owns this node's pool. With
// --standalone it also serves the Controller on the same socket: one node,
// a local pool, no Kubernetes.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

var version = "dev"

func main() {
	hostname, _ := os.Hostname()
	var (
		endpoint     = flag.String("endpoint", "unix:///var/lib/kubelet/plugins/csi.dotmesh.io/csi.sock", "CSI endpoint (unix:///path or tcp://host:port)")
		nodeID       = flag.String("node-id", hostname, "this node's name, reported in NodeGetInfo and as topology "+driver.TopologyKey)
		standalone   = flag.Bool("standalone", false, "also serve the CSI Controller on the same endpoint (one node, no Kubernetes)")
		dataDir      = flag.String("data-dir", "/var/lib/dotmesh", "backing folder holding the pool file "+zfsd.PoolFile)
		poolName     = flag.String("pool-name", "", "pool name; default is derived from the backing folder so it names the backing, not the node")
		poolSize     = flag.String("pool-size", "", "size of a new pool file (e.g. 10Gi); default 90% of the backing folder's free space")
		mountRoot    = flag.String("mount-root", "", "where dots are mounted; default DATA-DIR/mnt")
		hostMI       = flag.String("host-mountinfo", "", "mountinfo of a host process (e.g. /proc/1/mountinfo with hostPID): resolve and bind the backing folder's host-visible path")
		allowed      = flag.String("allowed-target-dirs", "/var/lib/kubelet", "comma-separated folders inside which staging and target paths may lie")
		zfsdEndpoint = flag.String("zfsd-endpoint", "", "serve zfsd's API here for a separate controller (unix:///path); empty disables it")
		defaultSize  = flag.String("default-volume-size", "1Gi", "capacity of a volume created without a size")
		driverName   = flag.String("driver-name", driver.DefaultName, "CSI driver name")
	)
	klog.InitFlags(nil)
	flag.Parse()

	size, err := quantity(*poolSize)
	if err != nil {
		klog.ErrorS(err, "bad --pool-size")
		os.Exit(2)
	}
	defSize, err := quantity(*defaultSize)
	if err != nil {
		klog.ErrorS(err, "bad --default-volume-size")
		os.Exit(2)
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		klog.ErrorS(err, "bad --data-dir")
		os.Exit(2)
	}
	if *poolName == "" {
		*poolName = DefaultPoolName(dir)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	openCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	z := zfs.New(zfs.ExecRunner{}, zfs.Options{})
	pool, err := zfsd.Open(openCtx, z, zfsd.Config{Name: *poolName, Dir: dir, HostMountinfo: *hostMI,
		Size: size, MountRoot: *mountRoot, Node: *nodeID})
	cancel()
	if err != nil {
		klog.ErrorS(err, "opening pool", "pool", *poolName, "dir", dir)
		os.Exit(1)
	}

	d := driver.New(driver.Config{Name: *driverName, Version: version, NodeID: *nodeID,
		AllowedTargetDirs: splitList(*allowed), DefaultCapacity: defSize}, pool)
	eps := []driver.Endpoint{{Address: *endpoint, Server: driver.NewServer(d, driver.Services{Controller: *standalone, Node: true})}}
	if *zfsdEndpoint != "" {
		zs := grpc.NewServer()
		api.RegisterZfsdServer(zs, remote.NewServer(pool, nil))
		eps = append(eps, driver.Endpoint{Address: *zfsdEndpoint, Server: zs})
	}
	klog.InfoS("starting", "standalone", *standalone, "node", *nodeID, "pool", *poolName)
	code := 0
	if err := driver.Serve(ctx, 20*time.Second, eps...); err != nil {
		code = 1
	}
	// Export only after every server has stopped: no call is using the pool.
	if err := closePool(pool); err != nil {
		code = 1
	}
	klog.Flush()
	os.Exit(code)
}

// DefaultPoolName names a pool after its backing folder.
func DefaultPoolName(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return "dotmesh-" + hex.EncodeToString(h[:4])
}

func closePool(p *zfsd.Pool) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := p.Close(ctx)
	if err != nil {
		klog.ErrorS(err, "pool left imported", "pool", p.Name())
	}
	return err
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
