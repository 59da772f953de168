package driver

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
)

// Services selects which CSI services a server offers.
type Services struct{ Controller, Node bool }

// ParseEndpoint checks an endpoint, unix:///path/csi.sock (or
// unix://path, relative) or tcp://host:port, and returns its network and
// address.
func ParseEndpoint(endpoint string) (network, address string, err error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		p := u.Path
		if u.Host != "" {
			p = filepath.Join(u.Host, p)
		}
		if p == "" {
			return "", "", fmt.Errorf("endpoint %q: names no socket", endpoint)
		}
		return "unix", p, nil
	case "tcp":
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return "", "", fmt.Errorf("endpoint %q: %w", endpoint, err)
		}
		return "tcp", u.Host, nil
	}
	return "", "", fmt.Errorf("endpoint %q: scheme must be unix or tcp", endpoint)
}

// Listen opens a CSI endpoint (see ParseEndpoint). A stale unix socket
// left by a crash is removed first.
func Listen(endpoint string) (net.Listener, error) {
	network, addr, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := os.MkdirAll(filepath.Dir(addr), 0o750); err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", endpoint, err)
		}
		if err := os.Remove(addr); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("endpoint %q: removing stale socket: %w", endpoint, err)
		}
	}
	return net.Listen(network, addr)
}

// NewServer returns a gRPC server with d's services registered and every
// call logged (secrets stripped), then passed through extra (metrics).
func NewServer(d *Driver, s Services, extra ...grpc.UnaryServerInterceptor) *grpc.Server {
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{logCalls}, extra...)...))
	csi.RegisterIdentityServer(srv, d)
	if s.Controller {
		csi.RegisterControllerServer(srv, d)
	}
	if s.Node {
		csi.RegisterNodeServer(srv, d)
	}
	return srv
}

func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	klog.V(4).InfoS("CSI call", "method", info.FullMethod, "request", protosanitizer.StripSecrets(req))
	resp, err := handler(ctx, req)
	if err != nil {
		klog.InfoS("CSI call failed", "method", info.FullMethod, "took", time.Since(start), "err", err)
	} else {
		klog.V(3).InfoS("CSI call done", "method", info.FullMethod, "took", time.Since(start))
	}
	return resp, err
}

// Endpoint is a gRPC server to serve at an address.
type Endpoint struct {
	Address string // unix:///path or tcp://host:port
	Server  *grpc.Server
}

// Serve listens on every endpoint, serves until ctx ends or a server
// fails, then lets in-flight calls finish (at most limit) and stops them
// all. A listen failure stops what was started and returns at once.
func Serve(ctx context.Context, limit time.Duration, eps ...Endpoint) error {
	errc := make(chan error, len(eps))
	started := 0
	var err error
	for _, ep := range eps {
		l, lerr := Listen(ep.Address)
		if lerr != nil {
			err = lerr
			break
		}
		go func() { errc <- ep.Server.Serve(l) }()
		started++
		klog.InfoS("serving", "endpoint", ep.Address)
	}
	if err == nil {
		select {
		case <-ctx.Done():
			klog.InfoS("shutting down", "reason", context.Cause(ctx))
		case err = <-errc:
			klog.ErrorS(err, "server stopped")
		}
	}
	for _, ep := range eps[:started] {
		done := make(chan struct{})
		go func() { ep.Server.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(limit):
			ep.Server.Stop()
		}
	}
	return err
}
