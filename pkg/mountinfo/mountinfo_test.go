package mountinfo

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Lines recorded from real hosts, trimmed.
const sample = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 8:1 /var/lib/kubelet/pods/x/volumes/y /data rw,relatime shared:1 master:2 - ext4 /dev/sda1 rw
31 22 0:45 / /mnt/with\040space rw,nosuid - tmpfs tmpfs rw,size=4k
32 22 0:46 / /a/b rw - tmpfs tmpfs rw
33 32 0:47 / /a/b rw - tmpfs tmpfs rw
34 22 0:48 /dir\134x /mnt/back rw - tmpfs  rw
`

func TestParse(t *testing.T) {
	ms, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 6 {
		t.Fatalf("parsed %d mounts, want 6", len(ms))
	}
	want := Mount{
		ID: 30, ParentID: 22, Major: 8, Minor: 1,
		Root: "/var/lib/kubelet/pods/x/volumes/y", MountPoint: "/data",
		Options: "rw,relatime", Optional: []string{"shared:1", "master:2"},
		FSType: "ext4", Source: "/dev/sda1", SuperOptions: "rw",
	}
	if !reflect.DeepEqual(ms[1], want) {
		t.Errorf("line 2:\n got %+v\nwant %+v", ms[1], want)
	}
	if !ms[1].Shared() || !ms[0].Shared() {
		t.Error("shared:N mounts not reported shared")
	}
	if m := ms[2]; m.MountPoint != "/mnt/with space" || m.Shared() || len(m.Optional) != 0 || m.Options != "rw,nosuid" || m.SuperOptions != "rw,size=4k" {
		t.Errorf("escaped space, no optional fields: %+v", m)
	}
	if m := ms[5]; m.Root != `/dir\x` || m.Source != "" || m.SuperOptions != "rw" {
		t.Errorf("escaped backslash, empty source: %+v", m)
	}

	for _, bad := range []string{
		"22 1 8:1 / / rw - ext4",                 // no super options
		"22 1 8:1 / / rw shared:1 ext4 /dev/x o", // no separator
		"x 1 8:1 / / rw - ext4 /dev/x rw",        // bad ID
		"22 y 8:1 / / rw - ext4 /dev/x rw",       // bad parent
		"22 1 81 / / rw - ext4 /dev/x rw",        // device without colon
		"22 1 8:z / / rw - ext4 /dev/x rw",       // bad minor
		"22 1 8:1 / - ext4 /dev/x rw",            // separator too early
	} {
		if _, err := Parse(strings.NewReader(sample + bad + "\n")); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestFindAndIsMountPoint(t *testing.T) {
	ms, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{
		"/data/x":             30,
		"/data":               30,
		"/data/":              30,
		"/database":           22, // a prefix as a string, not as a path
		"/a/b/c":              33, // stacked: the later line is on top
		"/a/b":                33,
		"/a/bc":               22,
		"/a":                  22,
		"/":                   22,
		"/mnt/with space/f":   31,
		"/data/../mnt/back/q": 34,
	} {
		if m, ok := Find(ms, path); !ok || m.ID != want {
			t.Errorf("Find(%q) = %d %v, want %d", path, m.ID, ok, want)
		}
	}
	if _, ok := Find(nil, "/x"); ok {
		t.Error("Find in an empty table found something")
	}

	for path, want := range map[string]int{"/a/b/": 33, "/a/b": 33, "/data": 30, "/": 22} {
		if m, ok := IsMountPoint(ms, path); !ok || m.ID != want {
			t.Errorf("IsMountPoint(%q) = %d %v, want %d", path, m.ID, ok, want)
		}
	}
	for _, path := range []string{"/a", "/a/bc", "/data/x", "/mnt"} {
		if m, ok := IsMountPoint(ms, path); ok {
			t.Errorf("IsMountPoint(%q) = %d, want none", path, m.ID)
		}
	}
}

func TestFindRelativePath(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	ms := []Mount{{ID: 1, MountPoint: "/"}, {ID: 2, MountPoint: wd}}
	if m, ok := Find(ms, "sub/x"); !ok || m.ID != 2 {
		t.Errorf("relative path not taken from the working directory: %d %v", m.ID, ok)
	}
	if _, ok := IsMountPoint(ms, "."); !ok {
		t.Error(`IsMountPoint(".") of the working directory's mount`)
	}
}

func TestReadFileSelf(t *testing.T) {
	ms, err := ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := Find(ms, "/"); !ok || m.MountPoint != "/" {
		t.Fatalf("no root mount in /proc/self/mountinfo: %+v", m)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("reading a missing file succeeded")
	}
}
