// Package csiclient starts the standalone driver and talks to it through its
// CSI socket the way the kubelet and the sidecars do. The demo and the
// benchmark share it.
package csiclient

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Driver is a running `dotmesh-node --standalone` and a connection to it.
type Driver struct {
	csi.ControllerClient
	csi.NodeClient
	Pool    string
	Allowed string // folder for staging and target paths
	cmd     *exec.Cmd
	conn    *grpc.ClientConn
}

// Start runs bin on a pool of size in work/, and waits for its socket.
func Start(bin, work, pool, size string, extra ...string) (*Driver, error) {
	sock := filepath.Join(work, "csi.sock")
	allowed := filepath.Join(work, "kubelet")
	if err := os.MkdirAll(allowed, 0o750); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(work, "driver.log"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"--standalone", "--endpoint=unix://" + sock, "--node-id=demo-node",
		"--data-dir=" + filepath.Join(work, "data"), "--pool-name=" + pool, "--pool-size=" + size,
		"--allowed-target-dirs=" + allowed}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &Driver{Pool: pool, Allowed: allowed, cmd: cmd}
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 600 {
			d.Stop()
			return nil, fmt.Errorf("driver socket %s did not appear; see %s", sock, logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		d.Stop()
		return nil, err
	}
	d.ControllerClient = csi.NewControllerClient(d.conn)
	d.NodeClient = csi.NewNodeClient(d.conn)
	return d, nil
}

// Stop sends SIGTERM (the driver exports its pool) and waits.
func (d *Driver) Stop() error {
	if d.conn != nil {
		d.conn.Close()
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		_ = d.cmd.Process.Kill()
		return fmt.Errorf("driver did not stop within 60s of SIGTERM")
	}
}

// MountCap is a single-node-writer filesystem capability.
func MountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// CreateVolume creates a dot, empty or from a snapshot.
func (d *Driver) CreateVolume(ctx context.Context, name string, size int64, fromSnapshot string) (string, error) {
	req := &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csi.VolumeCapability{MountCap()},
		CapacityRange: &csi.CapacityRange{RequiredBytes: size}}
	if fromSnapshot != "" {
		req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: fromSnapshot}}}
	}
	r, err := d.ControllerClient.CreateVolume(ctx, req)
	if err != nil {
		return "", err
	}
	return r.GetVolume().GetVolumeId(), nil
}

// Publish stages and publishes a volume and returns the target path.
func (d *Driver) Publish(ctx context.Context, id string) (string, error) {
	staging := filepath.Join(d.Allowed, "staging", id)
	target := filepath.Join(d.Allowed, "pods", id, "mount")
	if _, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: MountCap()}); err != nil {
		return "", err
	}
	if _, err := d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: MountCap()}); err != nil {
		return "", err
	}
	return target, nil
}

// Unpublish undoes Publish.
func (d *Driver) Unpublish(ctx context.Context, id string) error {
	staging := filepath.Join(d.Allowed, "staging", id)
	target := filepath.Join(d.Allowed, "pods", id, "mount")
	if _, err := d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		return err
	}
	_, err := d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	return err
}
