package mountinfo

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// HostPath resolves the path the host sees for dir, a folder as this
// process sees it. A container sees its volumes at its own paths; the ZFS
// kernel module (or the zfs-fuse daemon) opens pool files in the host's
// namespace, so `zpool import -d` needs the host's path.
//
// The mount holding dir is on some device at some root within that
// device's filesystem; the host has the same device mounted somewhere with
// a root at or above it, and the host path follows from that mount.
func HostPath(dir, selfMountinfo, hostMountinfo string) (string, error) {
	dir = filepath.Clean(dir)
	if selfMountinfo == hostMountinfo {
		return dir, nil
	}
	selfRaw, err := os.ReadFile(selfMountinfo)
	if err != nil {
		return "", fmt.Errorf("host path of %s: %w", dir, err)
	}
	hostRaw, err := os.ReadFile(hostMountinfo)
	if err != nil {
		return "", fmt.Errorf("host path of %s: %w", dir, err)
	}
	if bytes.Equal(selfRaw, hostRaw) {
		return dir, nil
	}
	self, err := Parse(bytes.NewReader(selfRaw))
	if err != nil {
		return "", err
	}
	host, err := Parse(bytes.NewReader(hostRaw))
	if err != nil {
		return "", err
	}
	m, ok := Find(self, dir)
	if !ok {
		return "", fmt.Errorf("host path of %s: no mount holds it in %s", dir, selfMountinfo)
	}
	rel, err := filepath.Rel(m.MountPoint, dir)
	if err != nil {
		return "", fmt.Errorf("host path of %s: %w", dir, err)
	}
	fsPath := filepath.Join(m.Root, rel)

	var best Mount
	found := false
	for _, h := range host {
		if h.Major != m.Major || h.Minor != m.Minor || !within(fsPath, h.Root) {
			continue
		}
		better := !found || len(h.Root) > len(best.Root) ||
			(len(h.Root) == len(best.Root) && len(h.MountPoint) < len(best.MountPoint))
		if better {
			best, found = h, true
		}
	}
	if !found {
		return "", fmt.Errorf("host path of %s: device %d:%d at %s is not mounted in %s", dir, m.Major, m.Minor, fsPath, hostMountinfo)
	}
	return filepath.Join(best.MountPoint, strings.TrimPrefix(fsPath, best.Root)), nil
}
