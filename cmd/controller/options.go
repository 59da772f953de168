package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/operator"
)

// Options are dotmesh-controller's flags. AddFlags registers them, and
// Validate checks them for the mode they select.
type Options struct {
	Endpoint          string
	ZfsdEndpoint      string
	DriverName        string
	Kubeconfig        string
	Namespace         string
	CASecret          string
	Unreachable       time.Duration
	ReplicationResync time.Duration
	MetricsAddress    string
	ConfigMap         string
	PoolImage         string
	OperatorResync    time.Duration
	CertValidity      time.Duration
	NodeSA            string
	NodeDaemonSet     string
}

// Clustered is cluster mode, the default: without --zfsd-endpoint the
// controller places dots through the Kubernetes API.
func (o *Options) Clustered() bool { return o.ZfsdEndpoint == "" }

// AddFlags registers the flags on fs. Names and defaults are what
// docs/flags.md lists.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///var/lib/csi/sockets/pluginproxy/csi.sock", "CSI endpoint (unix:///path or tcp://host:port)")
	fs.StringVar(&o.ZfsdEndpoint, "zfsd-endpoint", "", "drive the one zfsd on this unix socket (no cluster)")
	fs.StringVar(&o.DriverName, "driver-name", driver.DefaultName, "CSI driver name")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster config")
	fs.StringVar(&o.Namespace, "namespace", "dotmesh-system", "namespace of the CA Secret, of Events, and of the operator's ConfigMap, Lease, backing PVCs and pool pods")
	fs.StringVar(&o.CASecret, "ca-secret", "dotmesh-ca", "Secret holding the cluster CA (created if missing)")
	fs.DurationVar(&o.Unreachable, "unreachable-after", 10*time.Second, "a pool not heard from this long is unreachable")
	fs.DurationVar(&o.ReplicationResync, "replication-resync", 10*time.Second, "how often lagging replicas are caught up")
	fs.StringVar(&o.MetricsAddress, "metrics-address", "", "serve Prometheus /metrics and /healthz here (host:port); empty disables them")
	fs.StringVar(&o.ConfigMap, "config-map", operator.DefaultConfigMap, "ConfigMap (in --namespace) that configures the PV-per-node operator")
	fs.StringVar(&o.PoolImage, "pool-image", "", "image of the operator's pool pods (it needs /dotmesh-node); default this controller's own image, read from its pod (POD_NAME), else "+operator.DefaultPoolImage)
	fs.DurationVar(&o.OperatorResync, "operator-resync", operator.DefaultResync, "how often the operator reconciles backing PVCs and pool pods")
	fs.DurationVar(&o.CertValidity, "cert-validity", 6*time.Hour, "how long a zfsd certificate (the controller's own, and each node's it signs) lasts; each is renewed at two thirds of its life")
	fs.StringVar(&o.NodeSA, "node-service-account", "dotmesh-node", "the node plugin's ServiceAccount (in --namespace): only its pods get zfsd certificates")
	fs.StringVar(&o.NodeDaemonSet, "node-daemonset", "dotmesh-node", "the node plugin's DaemonSet (in --namespace): only pods it controls get zfsd certificates")
}

// Validate checks the flags for the selected mode; each error names its
// flag and says why.
func (o *Options) Validate() error {
	var errs []error
	bad := func(flag string, value any, why string) {
		errs = append(errs, fmt.Errorf("--%s=%v: %s", flag, value, why))
	}
	if _, _, err := driver.ParseEndpoint(o.Endpoint); err != nil {
		bad("endpoint", o.Endpoint, err.Error())
	}
	if o.DriverName == "" {
		bad("driver-name", o.DriverName, "is required")
	}
	if o.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(o.MetricsAddress); err != nil {
			bad("metrics-address", o.MetricsAddress, "must be host:port (or :port)")
		}
	}
	if !o.Clustered() {
		// The zfsd there answers without TLS: a socket, never the network.
		if network, _, err := driver.ParseEndpoint(o.ZfsdEndpoint); err != nil || network != "unix" {
			bad("zfsd-endpoint", o.ZfsdEndpoint, "must be a unix socket (unix:///path): zfsd answers there without TLS")
		}
		return errors.Join(errs...)
	}
	for _, f := range []struct{ flag, value string }{{"namespace", o.Namespace}, {"ca-secret", o.CASecret}, {"config-map", o.ConfigMap},
		{"node-service-account", o.NodeSA}, {"node-daemonset", o.NodeDaemonSet}} {
		if f.value == "" {
			bad(f.flag, f.value, "is required in cluster mode (without --zfsd-endpoint)")
		}
	}
	for _, f := range []struct {
		flag  string
		value time.Duration
	}{{"unreachable-after", o.Unreachable}, {"replication-resync", o.ReplicationResync}, {"operator-resync", o.OperatorResync}, {"cert-validity", o.CertValidity}} {
		if f.value <= 0 {
			bad(f.flag, f.value, "must be above zero")
		}
	}
	return errors.Join(errs...)
}
