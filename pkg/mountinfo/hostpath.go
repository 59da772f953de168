package mountinfo

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"
)

// HostPath resolves the path the host sees for dir, a folder as this
// process sees it. A container sees its volumes at its own paths, but the
// ZFS kernel module (or the zfs-fuse daemon) opens pool files in the host's
// namespace, so `zpool import -d` needs the host's path.
//
// The mount holding dir is some device with some root within that device's
// filesystem; the host has the same device mounted somewhere with a root at
// or above that folder, and the host path follows from that mount.
func HostPath(dir, selfMountinfo, hostMountinfo string) (string, error) {
	dir = absPath(dir)
	if filepath.Clean(selfMountinfo) == filepath.Clean(hostMountinfo) {
		return dir, nil
	}
	selfRaw, err := os.ReadFile(selfMountinfo)
	if err != nil {
		return "", fmt.Errorf("host path of %s: reading our mount table: %w", dir, err)
	}
	hostRaw, err := os.ReadFile(hostMountinfo)
	if err != nil {
		return "", fmt.Errorf("host path of %s: reading the host's mount table: %w", dir, err)
	}
	// Same table means same namespace (e.g. hostPID with no container
	// mount namespace): dir is already the host's path.
	if bytes.Equal(selfRaw, hostRaw) {
		return dir, nil
	}
	self, err := Parse(bytes.NewReader(selfRaw))
	if err != nil {
		return "", fmt.Errorf("host path of %s: %s: %w", dir, selfMountinfo, err)
	}
	host, err := Parse(bytes.NewReader(hostRaw))
	if err != nil {
		return "", fmt.Errorf("host path of %s: %s: %w", dir, hostMountinfo, err)
	}

	// A symlink in our namespace may point at a path that means something
	// else on the host, so look up where it really leads here. A folder
	// that does not exist yet is taken as written.
	lookup := dir
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		lookup = real
	}
	m, ok := Find(self, lookup)
	if !ok {
		return "", fmt.Errorf("host path of %s: no mount holds it in %s", dir, selfMountinfo)
	}
	rel, err := filepath.Rel(m.MountPoint, lookup)
	if err != nil {
		return "", fmt.Errorf("host path of %s: relative to mount point %s: %w", dir, m.MountPoint, err)
	}
	fsPath := filepath.Join(m.Root, rel)

	var best Mount
	var bestPath string
	for _, h := range host {
		if h.Major != m.Major || h.Minor != m.Minor || !within(fsPath, h.Root) {
			continue
		}
		p := filepath.Join(h.MountPoint, strings.TrimPrefix(fsPath, h.Root))
		// A mount the host has stacked over that path (or over a folder
		// above it) hides the device there; that path would not show
		// fsPath to the host.
		if !shows(host, p, h.Major, h.Minor, fsPath) {
			continue
		}
		// Longest root is the most specific mount of the folder; shortest
		// mount point keeps the answer stable across calls.
		better := bestPath == "" || len(h.Root) > len(best.Root) ||
			(len(h.Root) == len(best.Root) && len(h.MountPoint) < len(best.MountPoint))
		if better {
			best, bestPath = h, p
		}
	}
	if bestPath == "" {
		return "", fmt.Errorf("host path of %s: device %d:%d folder %s is not visible in any mount in %s", dir, m.Major, m.Minor, fsPath, hostMountinfo)
	}
	klog.V(4).InfoS("resolved host-visible path", "dir", dir, "device", fmt.Sprintf("%d:%d", m.Major, m.Minor), "fsPath", fsPath, "hostPath", bestPath)
	return bestPath, nil
}

// shows reports whether path, in the given table, lands on folder fsPath of
// device major:minor.
func shows(mounts []Mount, path string, major, minor int, fsPath string) bool {
	m, ok := Find(mounts, path)
	if !ok || m.Major != major || m.Minor != minor {
		return false
	}
	rel, err := filepath.Rel(m.MountPoint, path)
	return err == nil && filepath.Join(m.Root, rel) == fsPath
}
