// Package metrics exposes Prometheus metrics (CSI operation counts,
// latencies and errors, pool capacity, replica lag) and a liveness
// endpoint, on one HTTP listener.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// Metrics is one process's registry.
type Metrics struct {
	reg *prometheus.Registry
	ops *prometheus.CounterVec
	lat *prometheus.HistogramVec
}

// New returns a registry with the process and Go collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dotmesh_csi_operations_total",
			Help: "CSI calls by method and gRPC code (OK or the error)."}, []string{"method", "code"}),
		lat: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dotmesh_csi_operation_seconds",
			Help: "CSI call latency by method.", Buckets: prometheus.ExponentialBuckets(0.002, 2, 14)}, []string{"method"}),
	}
	m.reg.MustRegister(m.ops, m.lat, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Interceptor records each unary call.
func (m *Metrics) Interceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.ops.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
		m.lat.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
		return resp, err
	}
}

// poolCollector reports pool capacity at scrape time.
type poolCollector struct {
	pools       func(context.Context) ([]zfsd.PoolInfo, error)
	size, avail *prometheus.Desc
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.size; ch <- c.avail }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pools, err := c.pools(ctx)
	if err != nil {
		klog.V(2).InfoS("metrics: listing pools", "err", err)
		return
	}
	for _, p := range pools {
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(p.Size), p.Name, p.Node)
		ch <- prometheus.MustNewConstMetric(c.avail, prometheus.GaugeValue, float64(p.Available), p.Name, p.Node)
	}
}

// WatchPools reports the size and free space of the pools f lists.
func (m *Metrics) WatchPools(f func(context.Context) ([]zfsd.PoolInfo, error)) {
	m.reg.MustRegister(&poolCollector{pools: f,
		size:  prometheus.NewDesc("dotmesh_pool_size_bytes", "Usable size of a pool.", []string{"pool", "node"}, nil),
		avail: prometheus.NewDesc("dotmesh_pool_available_bytes", "Free space of a pool.", []string{"pool", "node"}, nil)})
}

// replicaCollector reports how many commits each replica lags.
type replicaCollector struct {
	view cluster.View
	lag  *prometheus.Desc
}

func (c *replicaCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.lag }

func (c *replicaCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dots, err := c.view.ListDots(ctx)
	if err != nil {
		klog.V(2).InfoS("metrics: listing dots", "err", err)
		return
	}
	for _, d := range dots {
		for _, r := range d.Replicas {
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(d.Lag(r)), d.ID, d.Name, r.Pool)
		}
	}
}

// WatchReplicas reports each replica's lag behind its master, in commits.
func (m *Metrics) WatchReplicas(view cluster.View) {
	m.reg.MustRegister(&replicaCollector{view: view,
		lag: prometheus.NewDesc("dotmesh_replica_lag_commits", "Commits a replica is behind its dot's master.", []string{"dot", "volume", "pool"}, nil)})
}

// Handler answers /metrics and /healthz. healthy says whether the process
// can do its job (its pool answers).
func (m *Metrics) Handler(healthy func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		c, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := healthy(c); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve serves Handler on addr until ctx ends.
func (m *Metrics) Serve(ctx context.Context, addr string, healthy func(context.Context) error) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: m.Handler(healthy), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.InfoS("serving metrics and liveness", "address", l.Addr().String())
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
