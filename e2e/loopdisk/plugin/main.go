// Command plugin serves the loop-disk test driver (package loopdisk) to a
// real cluster: with --controller, Identity and Controller for
// csi-provisioner and csi-attacher; otherwise Identity and Node for one
// node's kubelet, registered through the kubelet's plugin watcher. The
// e2e harness runs it as a process of each node, as a cloud's disk service
// is part of the machine, not of the cluster under test.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/e2e/loopdisk"
	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/registration"
)

func main() {
	endpoint := flag.String("endpoint", "", "CSI endpoint, unix:///path")
	nodeID := flag.String("node-id", "", "this node's name (node mode)")
	dir := flag.String("dir", "", "the folder every node sees, holding the disks")
	nodes := flag.String("nodes", "", "controller mode: comma-separated names of the nodes disks may attach to; empty accepts any")
	controller := flag.Bool("controller", false, "serve Identity and Controller instead of Identity and Node")
	regDir := flag.String("registration-dir", "/var/lib/kubelet/plugins_registry", "node mode: the kubelet's plugin watcher folder")
	klog.InitFlags(nil)
	flag.Parse()
	if *endpoint == "" || *dir == "" || (!*controller && *nodeID == "") {
		klog.ErrorS(nil, "--endpoint, --dir and (node mode) --node-id are required")
		os.Exit(2)
	}
	d := &loopdisk.Driver{Dir: *dir, NodeID: *nodeID, AnyNode: *controller && *nodes == ""}
	if *nodes != "" {
		d.Nodes = strings.Split(*nodes, ",")
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, d)
	eps := []driver.Endpoint{{Address: *endpoint, Server: srv}}
	if *controller {
		csi.RegisterControllerServer(srv, d)
	} else {
		csi.RegisterNodeServer(srv, d)
		reg := registration.New(loopdisk.Name, strings.TrimPrefix(*endpoint, "unix://"))
		eps = append(eps, driver.Endpoint{Address: "unix://" + registration.SocketPath(*regDir, loopdisk.Name), Server: reg.NewGRPC()})
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := driver.Serve(ctx, 10*time.Second, eps...); err != nil {
		os.Exit(1)
	}
}
