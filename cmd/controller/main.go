// Command dotmesh-controller is the controller plugin: CSI Identity and
// Controller on a unix socket for csi-provisioner, csi-snapshotter and
// csi-resizer. It does no ZFS work itself.
//
// In a cluster (--kubeconfig, or in a pod) it places dots on the nodes'
// pools through the cluster view and keeps replicas caught up; it creates
// the cluster CA Secret on first start; and it runs the PV-per-node
// operator, which keeps backing PVCs and pool pods when its ConfigMap asks
// for that mode. With --zfsd-endpoint it drives the one zfsd on that unix
// socket instead.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mesh"
	"github.com/dotmesh-io/dotmesh-csi/pkg/metrics"
	"github.com/dotmesh-io/dotmesh-csi/pkg/operator"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

var version = "dev"

func main() {
	var (
		endpoint    = flag.String("endpoint", "unix:///var/lib/csi/sockets/pluginproxy/csi.sock", "CSI endpoint (unix:///path or tcp://host:port)")
		zfsdAddr    = flag.String("zfsd-endpoint", "", "drive the one zfsd on this unix socket (no cluster)")
		driverName  = flag.String("driver-name", driver.DefaultName, "CSI driver name")
		kubeconfig  = flag.String("kubeconfig", "", "kubeconfig file; empty uses the in-cluster config")
		namespace   = flag.String("namespace", "dotmesh-system", "namespace of the CA Secret, of Events, and of the operator's ConfigMap, Lease, backing PVCs and pool pods")
		caSecret    = flag.String("ca-secret", "dotmesh-ca", "Secret holding the cluster CA (created if missing)")
		unreachable = flag.Duration("unreachable-after", 10*time.Second, "a pool not heard from this long is unreachable")
		resync      = flag.Duration("replication-resync", 10*time.Second, "how often lagging replicas are caught up")
		metricsAddr = flag.String("metrics-address", "", "serve Prometheus /metrics and /healthz here (host:port); empty disables them")
		configMap   = flag.String("config-map", operator.DefaultConfigMap, "ConfigMap (in --namespace) that configures the PV-per-node operator")
		poolImage   = flag.String("pool-image", "", "image of the operator's pool pods (it needs /dotmesh-node); default this controller's own image, read from its pod (POD_NAME), else "+operator.DefaultPoolImage)
		opResync    = flag.Duration("operator-resync", operator.DefaultResync, "how often the operator reconciles backing PVCs and pool pods")
	)
	klog.InitFlags(nil)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	m := metrics.New()
	var store driver.Store
	waitOperator := func() {}
	if *zfsdAddr != "" {
		// A unix socket on this host: no network, so no TLS.
		conn, err := grpc.NewClient(*zfsdAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			klog.ErrorS(err, "dialing zfsd", "endpoint", *zfsdAddr)
			os.Exit(1)
		}
		defer conn.Close()
		store = remote.NewClient(conn)
	} else {
		cfg, err := cluster.RestConfig(*kubeconfig)
		if err != nil {
			klog.ErrorS(err, "loading the Kubernetes client configuration", "kubeconfig", *kubeconfig)
			os.Exit(1)
		}
		ms, view, peers, err := joinCluster(ctx, cfg, *namespace, *caSecret, *unreachable)
		if err != nil {
			klog.ErrorS(err, "joining the cluster")
			os.Exit(1)
		}
		m.WatchReplicas(view)
		defer peers.Close()
		go rebuildThenReconcile(ctx, ms, *resync)
		go ms.AutoCommit(ctx, time.Second)
		store = ms
		waitOperator = startOperator(ctx, cfg, operator.Options{
			Namespace: *namespace, ConfigMap: *configMap, PoolImage: *poolImage, Resync: *opResync,
		})
	}
	m.WatchPools(store.Pools)
	if *metricsAddr != "" {
		go func() {
			if err := m.Serve(ctx, *metricsAddr, func(c context.Context) error { _, err := store.Pools(c); return err }); err != nil {
				klog.ErrorS(err, "metrics endpoint")
			}
		}()
	}
	d := driver.New(driver.Config{Name: *driverName, Version: version, Roaming: *zfsdAddr == ""}, store)
	err := driver.Serve(ctx, 20*time.Second, driver.Endpoint{Address: *endpoint, Server: driver.NewServer(d, driver.Services{Controller: true}, m.Interceptor())})
	// Serve may also return on its own failure: end the operator's term too.
	stop()
	waitOperator()
	klog.Flush()
	if err != nil {
		os.Exit(1)
	}
}

func joinCluster(ctx context.Context, cfg *rest.Config, namespace, caSecret string, unreachable time.Duration) (*mesh.Store, cluster.View, *remote.Dialer, error) {
	if err := cluster.EnsureCRDs(ctx, cfg); err != nil {
		return nil, nil, nil, err
	}
	view, err := cluster.NewKube(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	id, err := pki.ClusterIdentity(ctx, cs, namespace, caSecret, "controller")
	if err != nil {
		return nil, nil, nil, err
	}
	peers := remote.NewDialer(id)
	return mesh.New(mesh.Config{View: view, Peers: peers, Unreachable: unreachable}), view, peers, nil
}

// startOperator runs the PV-per-node operator until ctx ends, and returns a
// wait for it to have released its Lease, so a successor need not wait out
// the lease. It has a client of its own: its passes every couple of seconds
// must not eat into the rate limit of the view's handoffs.
func startOperator(ctx context.Context, cfg *rest.Config, opts operator.Options) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		cs, err := kubernetes.NewForConfig(cfg)
		if err == nil {
			if opts.PoolImage == "" {
				opts.PoolImage = ownImage(ctx, cs, opts.Namespace)
			}
			err = operator.Run(ctx, cs, opts)
		}
		if err != nil {
			klog.ErrorS(err, "the PV-per-node operator is not running")
		}
	}()
	return func() { <-done }
}

// rebuildThenReconcile restores records the view lost, once the nodes have
// had time to report, then keeps replicas caught up.
func rebuildThenReconcile(ctx context.Context, ms *mesh.Store, every time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(every):
	}
	if n, err := ms.Rebuild(ctx); err != nil {
		klog.ErrorS(err, "rebuilding the cluster view from the pools")
	} else if n > 0 {
		klog.InfoS("cluster view rebuilt from the pools", "restored", n)
	}
	ms.Reconcile(ctx, every)
}

// ownImage is the image of this controller's container, read from its pod,
// so pool pods run the same build however the image was renamed (a
// registry of one's own, kustomize images:). Outside a pod it is "", and
// the operator's default applies.
func ownImage(ctx context.Context, cs kubernetes.Interface, namespace string) string {
	name := os.Getenv("POD_NAME")
	if name == "" {
		return ""
	}
	pod, err := cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		klog.ErrorS(err, "reading this controller's pod for the pool pods' image; using the default", "pod", name)
		return ""
	}
	for _, c := range pod.Spec.Containers {
		if len(c.Command) > 0 && filepath.Base(c.Command[0]) == "dotmesh-controller" {
			return c.Image
		}
	}
	return ""
}
