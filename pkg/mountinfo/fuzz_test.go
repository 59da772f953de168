package mountinfo

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// escape is what the kernel does to a path in mountinfo: space, tab,
// newline and backslash become octal escapes (fs/proc_namespace.c).
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// format writes m as a mountinfo line.
func format(m Mount) string {
	f := []string{fmt.Sprint(m.ID), fmt.Sprint(m.ParentID), fmt.Sprintf("%d:%d", m.Major, m.Minor),
		escape(m.Root), escape(m.MountPoint), m.Options}
	f = append(f, m.Optional...)
	f = append(f, "-", escape(m.FSType), escape(m.Source), m.SuperOptions)
	return strings.Join(f, " ")
}

func FuzzParse(f *testing.F) {
	f.Add(sample)
	for _, l := range strings.Split(sample, "\n") {
		f.Add(l + "\n")
	}
	f.Add("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n")
	f.Add("1 2 3:4 / /a\\ b rw - t s o p q\n")
	f.Add("1 2 3:4 /\\400 /\\0 - - - - -\n")
	f.Fuzz(func(t *testing.T, table string) {
		ms, err := Parse(strings.NewReader(table))
		if err != nil {
			return
		}
		// Every mount, written out again as the kernel would, reads back
		// the same: nothing in the table was lost or misread.
		var lines []string
		for _, m := range ms {
			if strings.HasSuffix(m.SuperOptions, "\r") {
				// A line's last CR is taken for a CRLF ending, so a
				// written line would lose one more; the kernel ends
				// lines with LF and no option with a CR.
				return
			}
			lines = append(lines, format(m))
		}
		again, err := Parse(strings.NewReader(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatalf("rewritten table %q: %v", lines, err)
		}
		if len(ms) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(again, ms) {
			t.Fatalf("rewritten table reads back as\n%+v\nwant\n%+v", again, ms)
		}
	})
}

// FuzzMountPoint checks the round trip the driver relies on: a folder the
// kernel lists, escaped, is found again under its own name.
func FuzzMountPoint(f *testing.F) {
	for _, p := range []string{"/", "/data", "/mnt/with space", "/a\tb", "/a\nb", `/dir\x`, `/a\134b`, "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pvc-1/mount"} {
		f.Add(p, "tmpfs")
	}
	f.Fuzz(func(t *testing.T, p, source string) {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return // the kernel lists clean absolute paths
		}
		line := format(Mount{ID: 40, ParentID: 1, Major: 0, Minor: 50, Root: p, MountPoint: p, Options: "rw", FSType: "zfs", Source: source, SuperOptions: "rw"})
		ms, err := Parse(strings.NewReader("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n" + line + "\n"))
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if len(ms) != 2 || ms[1].MountPoint != p || ms[1].Root != p || ms[1].Source != source {
			t.Fatalf("line %q read as %+v", line, ms)
		}
		if m, ok := IsMountPoint(ms, p); !ok || m.ID != 40 {
			t.Fatalf("IsMountPoint(%q) = %+v, %v", p, m, ok)
		}
		if m, ok := Find(ms, filepath.Join(p, "sub")); !ok || m.ID != 40 {
			t.Fatalf("Find below %q = %+v, %v", p, m, ok)
		}
	})
}
