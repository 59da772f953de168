package registration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/dotmesh-io/dotmesh-csi/pkg/driver"
)

// The kubelet's side of the handshake, as its plugin watcher does it.
func TestKubeletHandshake(t *testing.T) {
	dir := t.TempDir()
	if err := Check(dir); err != nil {
		t.Fatal(err)
	}
	s := New("csi.dotmesh.io", "/var/lib/kubelet/plugins/csi.dotmesh.io/csi.sock")
	sock := SocketPath(dir, "csi.dotmesh.io")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- driver.Serve(ctx, time.Second, driver.Endpoint{Address: "unix://" + sock, Server: s.NewGRPC()})
	}()
	t.Cleanup(func() { cancel(); <-done })

	// Dial once the socket exists: a first dial that fails puts the client
	// in gRPC's reconnect backoff, which outlasts a short retry loop.
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 500 {
			t.Fatalf("registration socket %s never appeared", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := registerapi.NewRegistrationClient(conn)
	var info *registerapi.PluginInfo
	for i := 0; i < 50; i++ {
		if info, err = c.GetInfo(context.Background(), &registerapi.InfoRequest{}); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != "csi.dotmesh.io" || info.Endpoint != "/var/lib/kubelet/plugins/csi.dotmesh.io/csi.sock" || len(info.SupportedVersions) == 0 {
		t.Fatalf("plugin info %+v", info)
	}
	if s.Registered.Load() {
		t.Fatal("registered before the kubelet said so")
	}
	if _, err := c.NotifyRegistrationStatus(context.Background(), &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if !s.Registered.Load() {
		t.Fatal("the kubelet's success was not recorded")
	}
	if filepath.Dir(sock) != dir {
		t.Fatalf("socket %s outside %s", sock, dir)
	}
}
