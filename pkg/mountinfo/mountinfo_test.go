package mountinfo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const sample = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:1 /var/lib/kubelet/pods/x/volumes/y /data rw,relatime shared:1 master:2 - ext4 /dev/sda1 rw
31 22 0:45 / /mnt/with\040space rw - tmpfs tmpfs rw
32 22 0:46 / /a/b rw - tmpfs tmpfs rw
33 32 0:47 / /a/b rw - tmpfs tmpfs rw
`

func TestParse(t *testing.T) {
	ms, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 5 {
		t.Fatalf("%d mounts", len(ms))
	}
	m := ms[1]
	if m.ID != 30 || m.ParentID != 22 || m.Major != 8 || m.Minor != 1 || m.Root != "/var/lib/kubelet/pods/x/volumes/y" ||
		m.MountPoint != "/data" || m.FSType != "ext4" || m.Source != "/dev/sda1" || len(m.Optional) != 2 || !m.Shared() {
		t.Fatalf("%+v", m)
	}
	if ms[2].MountPoint != "/mnt/with space" || ms[2].Shared() || len(ms[2].Optional) != 0 {
		t.Fatalf("%+v", ms[2])
	}
	for _, bad := range []string{"22 1 8:1 / / rw - ext4", "x 1 8:1 / / rw - ext4 s o", "22 1 81 / / rw - ext4 s o", "22 1 8:1 / / rw shared:1 ext4 s o"} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestFind(t *testing.T) {
	ms, _ := Parse(strings.NewReader(sample))
	cases := map[string]string{"/data/x": "/data", "/data": "/data", "/database": "/", "/a/b/c": "/a/b", "/a/bc": "/"}
	for p, want := range cases {
		m, ok := Find(ms, p)
		if !ok || m.MountPoint != want {
			t.Errorf("Find(%q) = %q", p, m.MountPoint)
		}
	}
	if m, _ := Find(ms, "/a/b"); m.ID != 33 {
		t.Errorf("stacked mount: got ID %d, want the later 33", m.ID)
	}
	if m, ok := IsMountPoint(ms, "/a/b/"); !ok || m.ID != 33 {
		t.Errorf("IsMountPoint /a/b: %v %d", ok, m.ID)
	}
	if _, ok := IsMountPoint(ms, "/a"); ok {
		t.Error("/a is not a mount point")
	}
}

func write(t *testing.T, dir, name, s string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostPath(t *testing.T) {
	dir := t.TempDir()
	self := write(t, dir, "self", "1 0 8:1 /var/lib/kubelet/pods/x/volumes/y /data rw - ext4 /dev/sda1 rw\n2 0 0:20 / / rw - overlay overlay rw\n")
	hostRoot := write(t, dir, "host1", "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
	got, err := HostPath("/data/sub", self, hostRoot)
	if err != nil || got != "/var/lib/kubelet/pods/x/volumes/y/sub" {
		t.Fatalf("%q, %v", got, err)
	}
	// The device is mounted elsewhere on the host, and the container's
	// volume is a folder inside it.
	self2 := write(t, dir, "self2", "1 0 8:16 /pv1 /data rw - ext4 /dev/sdb rw\n")
	hostDisk := write(t, dir, "host2", "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:16 / /mnt/disk rw - ext4 /dev/sdb rw\n3 1 8:16 /other /mnt/other rw - ext4 /dev/sdb rw\n")
	got, err = HostPath("/data/pool", self2, hostDisk)
	if err != nil || got != "/mnt/disk/pv1/pool" {
		t.Fatalf("%q, %v", got, err)
	}
	// A host mount rooted deeper, at the volume itself, wins.
	hostDeep := write(t, dir, "host3", "2 1 8:16 / /mnt/disk rw - ext4 /dev/sdb rw\n4 1 8:16 /pv1 /var/lib/pv1 rw - ext4 /dev/sdb rw\n")
	got, err = HostPath("/data", self2, hostDeep)
	if err != nil || got != "/var/lib/pv1" {
		t.Fatalf("%q, %v", got, err)
	}
	hostNone := write(t, dir, "host4", "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
	if _, err := HostPath("/data", self2, hostNone); err == nil {
		t.Fatal("resolved a device the host does not have")
	}
	if got, err := HostPath("/x/../data", self, self); err != nil || got != "/data" {
		t.Fatalf("same namespace: %q, %v", got, err)
	}
}

func TestBindUnmountMakeShared(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CI runs as root)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	dst := filepath.Join(dir, "dst")
	ro := filepath.Join(dir, "ro")
	shared := filepath.Join(dir, "shared")
	for _, d := range []string{src, shared} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range []string{ro, dst, shared} {
			_ = Unmount(p)
		}
	})
	if err := Bind(src, dst, false); err != nil {
		t.Fatal(err)
	}
	if err := Bind(src, dst, false); err != nil {
		t.Fatalf("second bind of the same source: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dst, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "f")); err != nil {
		t.Fatal("write through the bind not visible at the source")
	}
	if err := Bind(shared, dst, false); !errors.Is(err, ErrMountedElsewhere) {
		t.Fatalf("binding something else over dst: %v", err)
	}
	if err := Bind(src, ro, true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "g"), []byte("x"), 0o600); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write to read-only bind: %v", err)
	}
	for _, p := range []string{dst, ro} {
		if err := Unmount(p); err != nil {
			t.Fatal(err)
		}
		if err := Unmount(p); err != nil {
			t.Fatalf("second unmount: %v", err)
		}
	}
	if err := MakeShared(shared); err != nil {
		t.Fatal(err)
	}
	if err := MakeShared(shared); err != nil {
		t.Fatal(err)
	}
	ms, _ := ReadFile("/proc/self/mountinfo")
	m, ok := IsMountPoint(ms, shared)
	if !ok || !m.Shared() {
		t.Fatalf("%s not a shared mount point: %+v", shared, m)
	}
	root, _ := Find(ms, filepath.Dir(shared))
	for _, o := range m.Optional {
		for _, r := range root.Optional {
			if o == r {
				t.Fatalf("shared mount joined its parent's peer group %s", o)
			}
		}
	}
}
