package multinode

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
)

// CSI is a client of one plugin socket, as the kubelet or a sidecar is.
type CSI struct {
	csi.IdentityClient
	csi.ControllerClient
	csi.NodeClient
	conn *grpc.ClientConn
}

// Dial connects to a plugin's unix socket.
func (h *Harness) Dial(sock string) *CSI {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return &CSI{IdentityClient: csi.NewIdentityClient(conn), ControllerClient: csi.NewControllerClient(conn),
		NodeClient: csi.NewNodeClient(conn), conn: conn}
}

// MountCap is a single-node-writer filesystem capability.
func MountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// Stage stages and publishes a volume on node n through its plugin, as the
// kubelet does, and returns the target path (inside the node).
func (n *Node) Stage(ctx context.Context, c *CSI, id string) (string, error) {
	staging, target := n.StagePaths(id)
	if _, err := c.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: MountCap()}); err != nil {
		return "", err
	}
	if _, err := c.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: MountCap()}); err != nil {
		return "", err
	}
	return target, nil
}

// StagePaths are where Stage stages and publishes a volume on node n.
func (n *Node) StagePaths(id string) (staging, target string) {
	return filepath.Join(n.KubeletDir(), "staging", id), filepath.Join(n.KubeletDir(), "pods", id, "mount")
}

// Unstage undoes Stage.
func (n *Node) Unstage(ctx context.Context, c *CSI, id string) error {
	staging, target := n.StagePaths(id)
	if _, err := c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		return err
	}
	_, err := c.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	return err
}

// Write appends mib MiB of random data to path inside the node, flushed.
func (n *Node) Write(ctx context.Context, path string, mib int) error {
	_, err := n.Exec(ctx, "dd", "if=/dev/urandom", "of="+path, "bs=1M", fmt.Sprintf("count=%d", mib), "oflag=append", "conv=notrunc,fsync", "status=none")
	return err
}

// Sum is the sha256 of a file inside the node.
func (n *Node) Sum(ctx context.Context, path string) (string, error) {
	out, err := n.Exec(ctx, "sha256sum", path)
	if err != nil {
		return "", err
	}
	return strings.Fields(out)[0], nil
}

// TxBytes is how many bytes the node has sent over its network interface.
// /proc/net/dev answers for the reader's network namespace (sysfs would
// answer for the namespace it was mounted in).
func (n *Node) TxBytes(ctx context.Context) (int64, error) {
	out, err := n.Exec(ctx, "cat", "/proc/net/dev")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || name != "eth0" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			break
		}
		var v int64
		_, err := fmt.Sscan(f[8], &v)
		return v, err
	}
	return 0, fmt.Errorf("node %s: no eth0 in /proc/net/dev:\n%s", n.Name, out)
}

// View is the cluster view as the test sees it.
func (h *Harness) View() cluster.View {
	v, err := cluster.NewKube(h.Rest)
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}

// WaitDot polls a dot's record until ok holds.
func (h *Harness) WaitDot(id string, limit time.Duration, ok func(cluster.Dot) bool) cluster.Dot {
	h.t.Helper()
	v := h.View()
	deadline := time.Now().Add(limit)
	for {
		d, err := v.GetDot(context.Background(), id)
		if err == nil && ok(d) {
			return d
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("dot %s: condition not met within %s (last %+v, %v)", id, limit, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Events lists the Events recorded about dots.
func (h *Harness) Events(ctx context.Context) ([]string, error) {
	list, err := h.Client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out, nil
}

// WaitPools waits until n pools have reported a heartbeat in the last
// few seconds.
func (h *Harness) WaitPools(n int) {
	h.t.Helper()
	v := h.View()
	waitFor(h.t, time.Minute, func() bool {
		pools, err := v.ListPools(context.Background())
		fresh := 0
		for _, p := range pools {
			if err == nil && time.Since(p.LastHeartbeat) < 3*time.Second {
				fresh++
			}
		}
		return fresh >= n
	})
}
