package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/poolpods"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// holdPool is the pool pod's one process (`dotmesh-node hold-pool`). The
// pod exists to keep its backing PVC attached and mounted on this node;
// the node plugin imports the pool from that mount. On SIGTERM it waits
// until the plugin has exported the pool and says so with the released
// marker: the kubelet unmounts and detaches the volume only after this
// process exits, so a pool is never detached while imported. A pool that
// was never created there has nothing to wait for.
func holdPool(args []string) int {
	fs := flag.NewFlagSet("hold-pool", flag.ContinueOnError)
	dir := fs.String("dir", "/pool", "where the pool pod mounts its backing PVC")
	poll := fs.Duration("poll", 500*time.Millisecond, "how often to look for the released marker after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	klog.InfoS("holding the backing volume for the node plugin", "dir", *dir)
	<-ctx.Done()
	klog.InfoS("asked to stop; waiting for the node plugin to export the pool", "dir", *dir)
	for {
		if _, err := os.Stat(filepath.Join(*dir, poolpods.ReleasedMarker)); err == nil {
			klog.InfoS("pool exported; releasing the backing volume", "dir", *dir)
			return 0
		}
		if _, err := os.Stat(filepath.Join(*dir, zfsd.PoolFile)); errors.Is(err, os.ErrNotExist) {
			klog.InfoS("no pool file; nothing to wait for", "dir", *dir)
			return 0
		}
		time.Sleep(*poll)
	}
}
