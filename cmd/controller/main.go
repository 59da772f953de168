// Command dotmesh-controller is the controller plugin: CSI Identity and
// Controller on a unix socket for csi-provisioner, csi-snapshotter and
// csi-resizer. It does no ZFS work itself.
//
// In a cluster (--kubeconfig, or in a pod) it places dots on the nodes'
// pools through the cluster view and keeps replicas caught up; it creates
// the cluster CA Secret on first start, is the only process that reads
// it, and signs the node plugins' zfsd certificates; and it runs the
// PV-per-node operator, which keeps backing PVCs and pool pods when its
// ConfigMap asks for that mode. With --zfsd-endpoint it drives the one zfsd on that unix
// socket instead.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/internal/cmdmain"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mesh"
	"github.com/dotmesh-io/dotmesh-csi/pkg/metrics"
	"github.com/dotmesh-io/dotmesh-csi/pkg/operator"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
	"github.com/dotmesh-io/dotmesh-csi/pkg/signer"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

var version = "dev"

func main() {
	o := &Options{}
	cmdmain.Run("dotmesh-controller", o, func(ctx context.Context) int { return run(ctx, *o) })
}

// run serves until ctx ends and returns the exit code.
func run(ctx context.Context, o Options) int {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	m := metrics.New()
	store, done, err := openStore(ctx, o, m)
	if err != nil {
		klog.ErrorS(err, "starting", "clustered", o.Clustered())
		return 1
	}
	m.WatchPools(store.Pools)
	if o.MetricsAddress != "" {
		go func() {
			if err := m.Serve(ctx, o.MetricsAddress, func(c context.Context) error { _, err := store.Pools(c); return err }); err != nil {
				klog.ErrorS(err, "metrics endpoint")
			}
		}()
	}
	d := driver.New(driver.Config{Name: o.DriverName, Version: version, Roaming: o.Clustered()}, store)
	err = driver.Serve(ctx, 20*time.Second, driver.Endpoint{Address: o.Endpoint, Server: driver.NewServer(d, driver.Services{Controller: true}, m.Interceptor())})
	// Serve may also return on its own failure: end the operator's term too.
	stop()
	done()
	if err != nil {
		return 1
	}
	return 0
}

// openStore is the one zfsd on --zfsd-endpoint or, in cluster mode, the
// mesh, with replication, automatic commits and the PV-per-node operator
// running until ctx ends. done closes what was opened once they have
// stopped.
func openStore(ctx context.Context, o Options, m *metrics.Metrics) (store driver.Store, done func(), err error) {
	if !o.Clustered() {
		// A unix socket on this host: no network, so no TLS.
		conn, err := grpc.NewClient(o.ZfsdEndpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, fmt.Errorf("dialing zfsd on %s: %w", o.ZfsdEndpoint, err)
		}
		return remote.NewClient(conn), func() { conn.Close() }, nil
	}
	cfg, err := cluster.RestConfig(o.Kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the Kubernetes client configuration (--kubeconfig=%q): %w", o.Kubeconfig, err)
	}
	ms, view, peers, err := joinCluster(ctx, cfg, o)
	if err != nil {
		return nil, nil, fmt.Errorf("joining the cluster: %w", err)
	}
	m.WatchReplicas(view)
	go rebuildThenReconcile(ctx, ms, o.ReplicationResync)
	go ms.AutoCommit(ctx, time.Second)
	waitOperator := startOperator(ctx, cfg, operator.Options{
		Namespace: o.Namespace, ConfigMap: o.ConfigMap, PoolImage: o.PoolImage, Resync: o.OperatorResync,
	})
	return ms, func() { waitOperator(); peers.Close() }, nil
}

// joinCluster reads (or makes) the cluster CA, keeps the controller's own
// short-lived certificate renewed from it, signs the nodes' certificates,
// and returns the mesh over the Kubernetes view.
func joinCluster(ctx context.Context, cfg *rest.Config, o Options) (*mesh.Store, cluster.View, *remote.Dialer, error) {
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
	ca, err := pki.EnsureCASecret(ctx, cs, o.Namespace, o.CASecret)
	if err != nil {
		return nil, nil, nil, err
	}
	// The controller holds the CA, so it issues its own certificate; the
	// first before anything dials, the next ones as each ages.
	issue := func(context.Context) (*pki.Identity, error) { return ca.IssueShort(pki.ControllerName, o.CertValidity) }
	id, err := issue(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("issuing the controller's zfsd certificate: %w", err)
	}
	holder := &pki.Holder{}
	holder.Set(id)
	go pki.Keep(ctx, holder, pki.ControllerName, issue)
	go signer.New(signer.Config{Client: cs, CA: ca, Namespace: o.Namespace, ServiceAccount: o.NodeSA,
		DaemonSet: o.NodeDaemonSet, Validity: o.CertValidity}).Run(ctx, time.Minute)
	peers := remote.NewDialer(holder)
	return mesh.New(mesh.Config{View: view, Peers: peers, Unreachable: o.Unreachable}), view, peers, nil
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
