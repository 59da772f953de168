package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/poolpods"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// HoldOptions are the flags of `dotmesh-node hold-pool`.
type HoldOptions struct {
	Dir  string
	Poll time.Duration
}

// AddFlags registers the flags on fs.
func (o *HoldOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Dir, "dir", "/pool", "where the pool pod mounts its backing PVC")
	fs.DurationVar(&o.Poll, "poll", 500*time.Millisecond, "how often to look for the released marker after SIGTERM")
}

// Validate says which flag is wrong and why.
func (o *HoldOptions) Validate() error {
	var errs []error
	if !filepath.IsAbs(o.Dir) {
		errs = append(errs, fmt.Errorf("--dir=%s: must be an absolute path, where the pool pod mounts its volume", o.Dir))
	}
	if o.Poll <= 0 {
		errs = append(errs, fmt.Errorf("--poll=%s: must be above zero", o.Poll))
	}
	return errors.Join(errs...)
}

// holdPool is the pool pod's one process (`dotmesh-node hold-pool`). The
// pod exists to keep its backing PVC attached and mounted on this node;
// the node plugin imports the pool from that mount. On SIGTERM it waits
// until the plugin has exported the pool and says so with the released
// marker: the kubelet unmounts and detaches the volume only after this
// process exits, so a pool is never detached while imported. A pool that
// was never created there has nothing to wait for.
func holdPool(args []string) int {
	var o HoldOptions
	fs := flag.NewFlagSet("hold-pool", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "dotmesh-node hold-pool: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	klog.InfoS("holding the backing volume for the node plugin", "dir", o.Dir)
	<-ctx.Done()
	klog.InfoS("asked to stop; waiting for the node plugin to export the pool", "dir", o.Dir)
	for {
		if _, err := os.Stat(filepath.Join(o.Dir, poolpods.ReleasedMarker)); err == nil {
			klog.InfoS("pool exported; releasing the backing volume", "dir", o.Dir)
			return 0
		}
		if _, err := os.Stat(filepath.Join(o.Dir, zfsd.PoolFile)); errors.Is(err, os.ErrNotExist) {
			klog.InfoS("no pool file; nothing to wait for", "dir", o.Dir)
			return 0
		}
		time.Sleep(o.Poll)
	}
}
