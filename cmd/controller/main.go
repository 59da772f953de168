// Command dotmesh-controller is the controller plugin: CSI Identity and
// Controller on a unix socket for csi-provisioner, csi-snapshotter and
// csi-resizer. It does no ZFS work itself; it drives the node's zfsd.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

var version = "dev"

func main() {
	var (
		endpoint   = flag.String("endpoint", "unix:///var/lib/csi/sockets/pluginproxy/csi.sock", "CSI endpoint (unix:///path or tcp://host:port)")
		zfsdAddr   = flag.String("zfsd-endpoint", "", "the node's zfsd API (unix:///path); required until the cluster view lands")
		driverName = flag.String("driver-name", driver.DefaultName, "CSI driver name")
	)
	klog.InitFlags(nil)
	flag.Parse()
	if *zfsdAddr == "" {
		klog.ErrorS(nil, "--zfsd-endpoint is required")
		os.Exit(2)
	}
	// Unix sockets only for now: the zfsd API gets mutual TLS before it is
	// ever offered over TCP.
	conn, err := grpc.NewClient(*zfsdAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		klog.ErrorS(err, "dialing zfsd", "endpoint", *zfsdAddr)
		os.Exit(1)
	}
	defer conn.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d := driver.New(driver.Config{Name: *driverName, Version: version}, remote.NewClient(conn))
	err = driver.Serve(ctx, 20*time.Second, driver.Endpoint{Address: *endpoint, Server: driver.NewServer(d, driver.Services{Controller: true})})
	klog.Flush()
	if err != nil {
		os.Exit(1)
	}
}
