package mountinfo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeTable(t *testing.T, dir, name, s string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostPath(t *testing.T) {
	dir := t.TempDir()
	// The container's volume is a folder of the host's root disk.
	self := writeTable(t, dir, "self", "2 0 0:20 / / rw - overlay overlay rw\n1 2 8:1 /var/lib/kubelet/pods/x/volumes/y /data rw - ext4 /dev/sda1 rw\n")
	hostRoot := writeTable(t, dir, "host-root", "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
	for in, want := range map[string]string{
		"/data/sub":  "/var/lib/kubelet/pods/x/volumes/y/sub",
		"/data":      "/var/lib/kubelet/pods/x/volumes/y",
		"/data/a/..": "/var/lib/kubelet/pods/x/volumes/y",
	} {
		if got, err := HostPath(in, self, hostRoot); err != nil || got != want {
			t.Errorf("HostPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}

	// The device is mounted elsewhere on the host, and the container's
	// volume is a folder inside it.
	selfPV := writeTable(t, dir, "self-pv", "1 0 8:16 /pv1 /data rw - ext4 /dev/sdb rw\n")
	hostDisk := writeTable(t, dir, "host-disk", `1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 8:16 / /mnt/disk rw - ext4 /dev/sdb rw
3 1 8:16 /other /mnt/other rw - ext4 /dev/sdb rw
`)
	if got, err := HostPath("/data/pool", selfPV, hostDisk); err != nil || got != "/mnt/disk/pv1/pool" {
		t.Errorf("device at /mnt/disk: %q, %v", got, err)
	}

	// A host mount rooted at the volume itself is the most specific one.
	hostDeep := writeTable(t, dir, "host-deep", `2 1 8:16 / /mnt/disk rw - ext4 /dev/sdb rw
4 1 8:16 /pv1 /var/lib/pv1 rw - ext4 /dev/sdb rw
5 1 8:16 /pv1 /zz rw - ext4 /dev/sdb rw
`)
	if got, err := HostPath("/data", selfPV, hostDeep); err != nil || got != "/zz" {
		t.Errorf("deepest root, then shortest mount point: %q, %v", got, err)
	}

	// The host has hidden /mnt/disk/pv1 under another mount; only the
	// second mount of the disk still shows the folder.
	hostHidden := writeTable(t, dir, "host-hidden", `2 1 8:16 / /mnt/disk rw - ext4 /dev/sdb rw
6 2 0:50 / /mnt/disk/pv1 rw - tmpfs tmpfs rw
7 1 8:16 / /srv/disk rw - ext4 /dev/sdb rw
`)
	if got, err := HostPath("/data/x", selfPV, hostHidden); err != nil || got != "/srv/disk/pv1/x" {
		t.Errorf("shadowed host mount: %q, %v", got, err)
	}

	for name, table := range map[string]string{
		"absent":       "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n",
		"other folder": "3 1 8:16 /other /mnt/other rw - ext4 /dev/sdb rw\n",
		"sibling name": "3 1 8:16 /pv10 /mnt/pv10 rw - ext4 /dev/sdb rw\n",
		"all hidden":   "2 1 8:16 / /mnt/disk rw - ext4 /dev/sdb rw\n6 2 0:50 / /mnt/disk rw - tmpfs tmpfs rw\n",
	} {
		host := writeTable(t, dir, "host-"+strings.ReplaceAll(name, " ", "-"), table)
		if got, err := HostPath("/data", selfPV, host); err == nil {
			t.Errorf("%s: resolved to %q", name, got)
		}
	}

	// Same namespace: by path, or by content.
	if got, err := HostPath("/x/../data", self, self); err != nil || got != "/data" {
		t.Errorf("same table path: %q, %v", got, err)
	}
	same := writeTable(t, dir, "self-copy", "2 0 0:20 / / rw - overlay overlay rw\n1 2 8:1 /var/lib/kubelet/pods/x/volumes/y /data rw - ext4 /dev/sda1 rw\n")
	if got, err := HostPath("/data/", self, same); err != nil || got != "/data" {
		t.Errorf("same table content: %q, %v", got, err)
	}

	if _, err := HostPath("/data", self, filepath.Join(dir, "missing")); err == nil {
		t.Error("missing host table accepted")
	}
	bad := writeTable(t, dir, "bad", "garbage\n")
	if _, err := HostPath("/data", self, bad); err == nil {
		t.Error("malformed host table accepted")
	}
}
