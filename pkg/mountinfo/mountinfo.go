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
	Root         string // root of the mount within its filesystem
	MountPoint   string
	Options      string
	Optional     []string // e.g. "shared:12", "master:3"
	FSType       string
	Source       string
	SuperOptions string
}

// Shared reports whether the mount propagates to and from its peers.
func (m Mount) Shared() bool {
	for _, o := range m.Optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// unescape undoes the kernel's octal escapes (\040 for space, etc.).
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

// Parse reads mountinfo lines.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		m, err := parseLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func parseLine(line string) (Mount, error) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 10 || sep < 0 || len(f) < sep+3 {
		return Mount{}, fmt.Errorf("mountinfo: malformed line %q", line)
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return Mount{}, fmt.Errorf("mountinfo: bad mount ID in %q", line)
	}
	if m.ParentID, err = strconv.Atoi(f[1]); err != nil {
		return Mount{}, fmt.Errorf("mountinfo: bad parent ID in %q", line)
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return Mount{}, fmt.Errorf("mountinfo: bad device in %q", line)
	}
	if m.Major, err = strconv.Atoi(maj); err != nil {
		return Mount{}, fmt.Errorf("mountinfo: bad major in %q", line)
	}
	if m.Minor, err = strconv.Atoi(min); err != nil {
		return Mount{}, fmt.Errorf("mountinfo: bad minor in %q", line)
	}
	m.Root = unescape(f[3])
	m.MountPoint = unescape(f[4])
	m.Options = f[5]
	m.Optional = append([]string(nil), f[6:sep]...)
	m.FSType = f[sep+1]
	m.Source = unescape(f[sep+2])
	if len(f) > sep+3 {
		m.SuperOptions = f[sep+3]
	}
	return m, nil
}

// ReadFile parses a mountinfo file such as /proc/self/mountinfo.
func ReadFile(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ms, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ms, nil
}

// within reports whether p is base or lies below it, component-wise.
func within(p, base string) bool {
	if base == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == base || strings.HasPrefix(p, base+"/")
}

// Find returns the mount that holds path: the longest mount point that is
// a prefix of it, the later line winning when mounts are stacked.
func Find(mounts []Mount, path string) (Mount, bool) {
	p := filepath.Clean(path)
	best, found := Mount{}, false
	for _, m := range mounts {
		if within(p, m.MountPoint) && (!found || len(m.MountPoint) >= len(best.MountPoint)) {
			best, found = m, true
		}
	}
	return best, found
}

// IsMountPoint returns the topmost mount exactly at path.
func IsMountPoint(mounts []Mount, path string) (Mount, bool) {
	p := filepath.Clean(path)
	var top Mount
	found := false
	for _, m := range mounts {
		if m.MountPoint == p {
			top, found = m, true
		}
	}
	return top, found
}
