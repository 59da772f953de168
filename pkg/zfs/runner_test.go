package zfs

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHostBinaryLooksInsideRoot(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/sbin", "sbin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/zpool"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	// An absolute symlink is valid on the host even when its target is
	// missing from our view.
	if err := os.Symlink("/usr/lib/zfs-linux/zfs", filepath.Join(root, "sbin/zfs")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"zpool": "/usr/sbin/zpool", "zfs": "/sbin/zfs", "mount.zfs": "mount.zfs", "/opt/zfs": "/opt/zfs"} {
		if got := hostBinary(root, name); got != want {
			t.Errorf("hostBinary(%q) = %q, want %q", name, got, want)
		}
	}
}
