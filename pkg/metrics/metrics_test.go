package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func scrape(t *testing.T, m *Metrics, path string, healthy func(context.Context) error) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler(healthy).ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestMetricsAndLiveness(t *testing.T) {
	m := New()
	icpt := m.Interceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Controller/CreateVolume"}
	_, _ = icpt(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, nil })
	_, _ = icpt(context.Background(), nil, info, func(context.Context, any) (any, error) {
		return nil, status.Error(codes.ResourceExhausted, "full")
	})
	m.WatchPools(func(context.Context) ([]zfsd.PoolInfo, error) {
		return []zfsd.PoolInfo{{Name: "p1", Node: "n1", Size: 1000, Available: 400}}, nil
	})
	view := cluster.NewMemory()
	_, _ = view.CreateDot(context.Background(), cluster.Dot{ID: "d1", Name: "vol", Master: "p1", Seq: 5,
		Replicas: []cluster.Replica{{Pool: "p2", Seq: 3, Updated: time.Now()}}})
	m.WatchReplicas(view)

	code, body := scrape(t, m, "/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`dotmesh_csi_operations_total{code="OK",method="/csi.v1.Controller/CreateVolume"} 1`,
		`dotmesh_csi_operations_total{code="ResourceExhausted",method="/csi.v1.Controller/CreateVolume"} 1`,
		`dotmesh_csi_operation_seconds_count{method="/csi.v1.Controller/CreateVolume"} 2`,
		`dotmesh_pool_available_bytes{node="n1",pool="p1"} 400`,
		`dotmesh_pool_size_bytes{node="n1",pool="p1"} 1000`,
		`dotmesh_replica_lag_commits{dot="d1",pool="p2",volume="vol"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, _ := scrape(t, m, "/healthz", func(context.Context) error { return nil }); code != 200 {
		t.Errorf("healthy /healthz: %d", code)
	}
	if code, body := scrape(t, m, "/healthz", func(context.Context) error { return errors.New("pool p1 is not imported") }); code != 503 || !strings.Contains(body, "not imported") {
		t.Errorf("unhealthy /healthz: %d %q", code, body)
	}
}
