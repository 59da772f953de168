// Package registration registers the node plugin with the kubelet itself,
// through the kubelet's plugin watcher (a socket in plugins_registry), since
// node-driver-registrar is not part of this driver's images.
package registration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Server answers the kubelet's plugin watcher.
type Server struct {
	registerapi.UnimplementedRegistrationServer
	name     string // CSI driver name
	endpoint string // the CSI socket as the kubelet sees it
	// Registered is set once the kubelet reports success; the liveness
	// endpoint reads it.
	Registered atomic.Bool
}

// New answers for driver name, whose CSI socket the kubelet reaches at endpoint.
func New(name, endpoint string) *Server { return &Server{name: name, endpoint: endpoint} }

func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: s.name, Endpoint: s.endpoint, SupportedVersions: []string{"1.0.0"}}, nil
}

func (s *Server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		s.Registered.Store(true)
		klog.InfoS("registered with the kubelet", "driver", s.name, "endpoint", s.endpoint)
	} else {
		klog.ErrorS(nil, "the kubelet refused the registration", "driver", s.name, "error", st.GetError())
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// SocketPath is where the kubelet's plugin watcher looks for this driver.
func SocketPath(registrationDir, driverName string) string {
	return filepath.Join(registrationDir, driverName+"-reg.sock")
}

// NewGRPC returns a gRPC server with s registered, for driver.Serve.
func (s *Server) NewGRPC() *grpc.Server {
	g := grpc.NewServer()
	registerapi.RegisterRegistrationServer(g, s)
	return g
}

// Check makes sure the registration folder exists, so a misconfigured path
// fails at start instead of silently never registering.
func Check(registrationDir string) error {
	st, err := os.Stat(registrationDir)
	if err != nil {
		return fmt.Errorf("kubelet registration folder: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("kubelet registration folder %s is not a folder", registrationDir)
	}
	return nil
}
