// Package mountinfo reads /proc/<pid>/mountinfo, resolves the host-visible
// path of a folder seen from inside a container, and makes the bind mounts
// the driver needs.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of /proc/<pid>/mountinfo.
type Mount struct {
	ID, ParentID int
	Major, Minor int
	Root         string   // root of the mount within its filesystem (field 4), unescaped
	MountPoint   string   // field 5, unescaped
	Options      string   // per-mount options (field 6)
	Optional     []string // optional fields, e.g. "shared:12", "master:3"
	FSType       string
	Source       string
	SuperOptions string
}

// Shared reports whether m has a "shared:N" optional field, that is whether
// mounts and unmounts below it propagate to and from its peers.
func (m Mount) Shared() bool {
	for _, o := range m.Optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// Parse reads mountinfo lines; a malformed line fails the whole table, since
// a partial table would make Find answer with the wrong mount.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	// Lines carry full mount options and paths; a host with long overlay
	// lowerdir lists exceeds the 64 KiB default.
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		m, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

func parseLine(line string) (Mount, error) {
	// Split on single spaces, not runs of them: an empty source shows as
	// two spaces in a row and must stay a field of its own.
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) < sep+4 {
		return Mount{}, fmt.Errorf("malformed line %q: want 6 fields, optional fields, \"-\", fstype, source, super options", line)
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return Mount{}, fmt.Errorf("mount ID in %q: %w", line, err)
	}
	if m.ParentID, err = strconv.Atoi(f[1]); err != nil {
		return Mount{}, fmt.Errorf("parent ID in %q: %w", line, err)
	}
	major, minor, ok := strings.Cut(f[2], ":")
	if !ok {
		return Mount{}, fmt.Errorf("device %q in %q: want major:minor", f[2], line)
	}
	if m.Major, err = strconv.Atoi(major); err != nil {
		return Mount{}, fmt.Errorf("device major in %q: %w", line, err)
	}
	if m.Minor, err = strconv.Atoi(minor); err != nil {
		return Mount{}, fmt.Errorf("device minor in %q: %w", line, err)
	}
	m.Root = unescape(f[3])
	m.MountPoint = unescape(f[4])
	m.Options = f[5]
	if sep > 6 {
		m.Optional = append([]string(nil), f[6:sep]...)
	}
	m.FSType = unescape(f[sep+1])
	m.Source = unescape(f[sep+2])
	// Old kernels could leave a space unescaped in cifs super options;
	// keep it rather than drop the tail.
	m.SuperOptions = strings.Join(f[sep+3:], " ")
	return m, nil
}

// unescape undoes the kernel's octal escapes (\040 space, \011 tab, \012
// newline, \134 backslash).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ReadFile parses a mountinfo file such as /proc/self/mountinfo.
func ReadFile(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening mount table: %w", err)
	}
	defer f.Close()
	ms, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ms, nil
}

// Find returns the mount holding path: the one whose mount point is the
// longest path-component prefix of it. Among mounts stacked at the same
// point the later line wins, as it is the one on top. Symlinks are not
// resolved: the table may be another namespace's, where they mean something
// else.
func Find(mounts []Mount, path string) (Mount, bool) {
	p := absPath(path)
	return top(mounts, func(m, best Mount, found bool) bool {
		return within(p, m.MountPoint) && (!found || len(m.MountPoint) >= len(best.MountPoint))
	})
}

// IsMountPoint returns the topmost mount exactly at path.
func IsMountPoint(mounts []Mount, path string) (Mount, bool) {
	p := absPath(path)
	return top(mounts, func(m, _ Mount, _ bool) bool { return m.MountPoint == p })
}

// top returns the last mount that beats the one chosen so far: the table
// lists mounts in the order they were made, so the last one stacked at a
// point is the one a path resolves to.
func top(mounts []Mount, beats func(m, best Mount, found bool) bool) (Mount, bool) {
	var best Mount
	found := false
	for _, m := range mounts {
		if beats(m, best, found) {
			best, found = m, true
		}
	}
	return best, found
}

// within reports whether p is base or lies below it, component-wise, so
// that /a/bc is not inside /a/b.
func within(p, base string) bool {
	if base == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == base || strings.HasPrefix(p, base+"/")
}

// absPath cleans p and makes it absolute. Getwd failing leaves a relative
// path, which then matches no mount point rather than a wrong one.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}
