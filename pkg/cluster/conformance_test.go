package cluster_test

import (
	"context"
	"testing"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster/clustertest"
)

func TestMemory(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) clustertest.Subject {
		m := cluster.NewMemory()
		return clustertest.Subject{View: m, Events: func(context.Context, string) ([]string, error) { return m.Events, nil }}
	})
}

// Kube on a fake API server; e2e/multinode runs the same on a real one.
func TestKubeOnFakeAPI(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) clustertest.Subject {
		dyn := clustertest.NewFakeDynamic()
		return clustertest.KubeSubject(t, dyn, func() cluster.View { return cluster.NewKubeOn(dyn) })
	})
}
