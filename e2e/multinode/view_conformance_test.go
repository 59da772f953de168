//go:build zfs

package multinode

import (
	"testing"

	"k8s.io/client-go/dynamic"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster/clustertest"
)

// The cluster view's suite on Kube over the harness's real etcd and API
// server, with the CRDs as deploy/ installs them: what pkg/cluster checks
// on a fake API server, here on the real thing. No node is needed.
func TestKubeViewConformance(t *testing.T) {
	h := New(t, Options{Nodes: 0})
	dyn, err := dynamic.NewForConfig(h.Rest)
	if err != nil {
		t.Fatal(err)
	}
	clustertest.Run(t, func(t *testing.T) clustertest.Subject {
		return clustertest.KubeSubject(t, dyn, func() cluster.View {
			v, err := cluster.NewKube(h.Rest)
			if err != nil {
				t.Fatal(err)
			}
			return v
		})
	})
}
