package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// Options are dotmesh-node's flags. AddFlags registers them, and Validate
// checks them for the mode they select and parses the sizes and folders,
// so run only ever sees values that were checked.
type Options struct {
	Endpoint          string
	NodeID            string
	Standalone        bool
	DriverName        string
	DataDir           string
	PoolName          string
	PoolSize          string
	MountRoot         string
	HostMountinfo     string
	HostRoot          string
	AllowedTargetDirs string
	DefaultVolumeSize string
	PoolCheckInterval time.Duration
	ExportOnExit      bool
	ZfsdEndpoint      string

	RegistrationPath string
	RegistrationDir  string

	Kubeconfig    string
	Namespace     string
	TLSCA         string
	TLSCert       string
	TLSKey        string
	ZfsdListen    string
	ZfsdAdvertise string
	Heartbeat     time.Duration
	Unreachable   time.Duration
	FailoverGrace time.Duration
	PoolPods      bool
	KubeletDir    string

	MetricsAddress string

	// InPod is whether the process runs in a Kubernetes pod, where cluster
	// mode needs no --kubeconfig. main sets it from the environment.
	InPod bool

	// What Validate parsed.
	dataDir         string // absolute
	poolBytes       int64  // 0: the pool's default
	defaultCapacity int64  // 0: the driver's default
	allowedDirs     []string
}

// mode is what the flags ask dotmesh-node to be.
type mode string

const (
	// modeStandalone: CSI Controller and Node on one socket, a local pool.
	modeStandalone mode = "standalone"
	// modeCluster: zfsd on TCP with mutual TLS and the cluster view in the
	// Kubernetes API.
	modeCluster mode = "cluster"
	// modeSplit: CSI Node, and zfsd on --zfsd-endpoint for a controller on
	// the same host.
	modeSplit mode = "split"
)

// Mode is the mode the flags select: --standalone wins, then a kubeconfig
// or a pod means cluster mode.
func (o *Options) Mode() mode {
	switch {
	case o.Standalone:
		return modeStandalone
	case o.Kubeconfig != "" || o.InPod:
		return modeCluster
	}
	return modeSplit
}

// AddFlags registers the flags on fs. Names and defaults are what
// docs/flags.md lists.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	hostname, _ := os.Hostname()
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///var/lib/kubelet/plugins/csi.dotmesh.io/csi.sock", "CSI endpoint (unix:///path or tcp://host:port)")
	fs.StringVar(&o.NodeID, "node-id", hostname, "this node's name, reported in NodeGetInfo and as topology "+driver.TopologyKey)
	fs.BoolVar(&o.Standalone, "standalone", false, "also serve the CSI Controller on the same endpoint (one node, no Kubernetes)")
	fs.StringVar(&o.DataDir, "data-dir", "/var/lib/dotmesh", "backing folder holding the pool file "+zfsd.PoolFile)
	fs.StringVar(&o.PoolName, "pool-name", "", "pool name; default is derived from the backing folder so it names the backing, not the node")
	fs.StringVar(&o.PoolSize, "pool-size", "", "size of a new pool file (e.g. 10Gi); default 90% of the backing folder's free space")
	fs.StringVar(&o.MountRoot, "mount-root", "", "where dots are mounted; default DATA-DIR/mnt")
	fs.StringVar(&o.HostMountinfo, "host-mountinfo", "", "mountinfo of a host process (e.g. /proc/1/mountinfo with hostPID): resolve and bind the backing folder's host-visible path")
	fs.StringVar(&o.AllowedTargetDirs, "allowed-target-dirs", "/var/lib/kubelet", "comma-separated folders inside which staging and target paths may lie")
	fs.StringVar(&o.DefaultVolumeSize, "default-volume-size", "1Gi", "capacity of a volume created without a size")
	fs.StringVar(&o.DriverName, "driver-name", driver.DefaultName, "CSI driver name")
	fs.StringVar(&o.ZfsdEndpoint, "zfsd-endpoint", "", "also serve zfsd's API on this unix socket, for a controller on the same host (unix:///path)")
	fs.StringVar(&o.ZfsdListen, "zfsd-listen", ":7455", "cluster mode: zfsd's API on TCP, with mutual TLS")
	fs.StringVar(&o.ZfsdAdvertise, "zfsd-advertise", "", "cluster mode: the address peers dial (host:port); default the listen address with this node's IP")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "cluster mode: kubeconfig file; empty uses the in-cluster config")
	fs.StringVar(&o.Namespace, "namespace", "dotmesh-system", "cluster mode: namespace of Events and of the pool pods (--pool-pods)")
	fs.StringVar(&o.TLSCA, "tls-ca-file", "", "cluster mode: CA certificate file; with --tls-cert-file and --tls-key-file instead of a certificate the controller signs")
	fs.StringVar(&o.TLSCert, "tls-cert-file", "", "cluster mode: this node's certificate file")
	fs.StringVar(&o.TLSKey, "tls-key-file", "", "cluster mode: this node's key file")
	fs.DurationVar(&o.Heartbeat, "heartbeat", 2*time.Second, "cluster mode: how often this node refreshes its pool in the cluster view")
	fs.DurationVar(&o.Unreachable, "unreachable-after", 10*time.Second, "cluster mode: a pool not heard from this long is unreachable; staging its dots elsewhere fails fast")
	fs.DurationVar(&o.PoolCheckInterval, "pool-check-interval", 5*time.Second, "how often each pool is checked; a pool whose ZFS restarted or that is no longer imported is imported again and served")
	fs.DurationVar(&o.FailoverGrace, "failover-grace", 2*time.Minute, "cluster mode: a master unreachable this long is replaced by its most up-to-date replica")
	fs.StringVar(&o.MetricsAddress, "metrics-address", "", "serve Prometheus /metrics and /healthz here (host:port); empty disables them")
	fs.StringVar(&o.RegistrationPath, "kubelet-registration-path", "", "the CSI socket's path as the kubelet sees it; when set, register with the kubelet's plugin watcher")
	fs.StringVar(&o.HostRoot, "host-root", "", "the host's / as mounted in this container; zfs and zpool then run chrooted into it, so they are the host's own (match its kernel module)")
	fs.BoolVar(&o.ExportOnExit, "export-on-exit", true, "export the pool when this process stops; a node plugin pod sets false, so a restart leaves mounted volumes serving")
	fs.StringVar(&o.RegistrationDir, "registration-dir", "/var/lib/kubelet/plugins_registry", "the kubelet's plugin watcher folder")
	fs.BoolVar(&o.PoolPods, "pool-pods", false, "cluster mode, PV-per-node: serve the pools of the operator's pool pods on this node (bound under DATA-DIR/pools) instead of a pool in --data-dir")
	fs.StringVar(&o.KubeletDir, "kubelet-dir", "/var/lib/kubelet", "the kubelet's root folder, at the same path here as on the host (--pool-pods)")
}

// Validate checks the flags for the selected mode; each error names its
// flag and says why. It fills in what it parsed and the derived default
// pool name.
func (o *Options) Validate() error {
	var errs []error
	bad := func(flag string, value any, why string) {
		errs = append(errs, fmt.Errorf("--%s=%v: %s", flag, value, why))
	}
	o.validateNode(bad)
	switch o.Mode() {
	case modeCluster:
		o.validateCluster(bad)
	case modeStandalone, modeSplit:
		if o.PoolPods {
			bad("pool-pods", o.PoolPods, fmt.Sprintf("needs cluster mode (a kubeconfig or a pod), and this is %s mode", o.Mode()))
		}
	}
	return errors.Join(errs...)
}

// validateNode checks what every mode uses.
func (o *Options) validateNode(bad func(string, any, string)) {
	if _, _, err := driver.ParseEndpoint(o.Endpoint); err != nil {
		bad("endpoint", o.Endpoint, err.Error())
	}
	if o.NodeID == "" {
		bad("node-id", o.NodeID, "is required (the host name could not be read)")
	}
	if o.DriverName == "" {
		bad("driver-name", o.DriverName, "is required")
	}
	if dir, err := filepath.Abs(o.DataDir); err != nil || o.DataDir == "" {
		bad("data-dir", o.DataDir, "must name a folder")
	} else {
		o.dataDir = dir
		if o.PoolName == "" {
			o.PoolName = DefaultPoolName(dir)
		}
	}
	var err error
	if o.poolBytes, err = quantity(o.PoolSize); err != nil {
		bad("pool-size", o.PoolSize, err.Error())
	}
	if o.defaultCapacity, err = quantity(o.DefaultVolumeSize); err != nil {
		bad("default-volume-size", o.DefaultVolumeSize, err.Error())
	}
	o.allowedDirs = splitList(o.AllowedTargetDirs)
	if len(o.allowedDirs) == 0 {
		bad("allowed-target-dirs", o.AllowedTargetDirs, "names no folder, so no volume could be staged")
	}
	for _, d := range o.allowedDirs {
		if !filepath.IsAbs(d) {
			bad("allowed-target-dirs", o.AllowedTargetDirs, fmt.Sprintf("%q is not an absolute path, and staging paths are", d))
		}
	}
	positive(bad, "pool-check-interval", o.PoolCheckInterval)
	if o.ZfsdEndpoint != "" {
		// zfsd's API has no TLS there: a socket, never the network.
		if network, _, err := driver.ParseEndpoint(o.ZfsdEndpoint); err != nil || network != "unix" {
			bad("zfsd-endpoint", o.ZfsdEndpoint, "must be a unix socket (unix:///path): the API is served there without TLS")
		}
	}
	if o.RegistrationPath != "" && !filepath.IsAbs(o.RegistrationPath) {
		bad("kubelet-registration-path", o.RegistrationPath, "must be an absolute path, as the kubelet sees the socket")
	}
	if o.RegistrationPath != "" && !filepath.IsAbs(o.RegistrationDir) {
		bad("registration-dir", o.RegistrationDir, "must be an absolute path")
	}
	if o.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(o.MetricsAddress); err != nil {
			bad("metrics-address", o.MetricsAddress, "must be host:port (or :port)")
		}
	}
}

// validateCluster checks what cluster mode adds.
func (o *Options) validateCluster(bad func(string, any, string)) {
	if _, _, err := net.SplitHostPort(o.ZfsdListen); err != nil {
		bad("zfsd-listen", o.ZfsdListen, "must be host:port (or :port)")
	}
	if o.ZfsdAdvertise != "" {
		if _, _, err := net.SplitHostPort(o.ZfsdAdvertise); err != nil {
			bad("zfsd-advertise", o.ZfsdAdvertise, "must be host:port, the address peers dial")
		}
	}
	if o.TLSCA != "" || o.TLSCert != "" || o.TLSKey != "" {
		if o.TLSCA == "" || o.TLSCert == "" || o.TLSKey == "" {
			bad("tls-ca-file", o.TLSCA, "--tls-ca-file, --tls-cert-file and --tls-key-file go together: set all three, or none to have the controller sign one")
		}
	}
	if o.Namespace == "" {
		bad("namespace", o.Namespace, "is required in cluster mode")
	}
	positive(bad, "heartbeat", o.Heartbeat)
	positive(bad, "failover-grace", o.FailoverGrace)
	if positive(bad, "unreachable-after", o.Unreachable) && o.Unreachable <= o.Heartbeat {
		bad("unreachable-after", o.Unreachable, fmt.Sprintf("must be longer than --heartbeat (%s), or this node's pools count as gone between heartbeats", o.Heartbeat))
	}
	if o.PoolPods && !filepath.IsAbs(o.KubeletDir) {
		bad("kubelet-dir", o.KubeletDir, "must be an absolute path, the same here as on the host")
	}
}

// positive refuses a duration that is not above zero: each one paces a
// loop.
func positive(bad func(string, any, string), flag string, d time.Duration) bool {
	if d <= 0 {
		bad(flag, d, "must be above zero")
		return false
	}
	return true
}

func quantity(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("not a size (e.g. 10Gi): %w", err)
	}
	if q.Sign() < 0 {
		return 0, errors.New("must not be negative")
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
