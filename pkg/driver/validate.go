package driver

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// maxNameLen is the CSI spec's bound on names and IDs (128 bytes).
const maxNameLen = 128

// minCapacity keeps refquota above what an empty filesystem already uses.
const minCapacity = 1 << 20

// validateName checks a CSI volume or snapshot name. Names are stored as
// property values, never as dataset names, but anything outside this set is
// not what a CO sends and is refused rather than carried around.
func validateName(kind, name string) error {
	if name == "" {
		return invalidf("%s name is required", kind)
	}
	if len(name) > maxNameLen {
		return invalidf("%s name is %d bytes; the limit is %d", kind, len(name), maxNameLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			(i > 0 && (r == '-' || r == '_' || r == '.'))
		if !ok {
			return invalidf("%s name %q: character %q at %d is not allowed (letters, digits, and '-', '_', '.' after the first)", kind, name, r, i)
		}
	}
	return nil
}

// checkID rejects IDs no CO could have got from us in a way that tells the
// caller their request is malformed (empty, oversized, control bytes).
// Well-formed strings that are not ours are simply not found.
func checkID(kind, id string) error {
	if id == "" {
		return invalidf("%s ID is required", kind)
	}
	if len(id) > maxNameLen {
		return invalidf("%s ID is %d bytes; the limit is %d", kind, len(id), maxNameLen)
	}
	if strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return invalidf("%s ID %q has a control character", kind, id)
	}
	return nil
}

// isDotID reports whether id has the shape of a dot ID (a UUID).
func isDotID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

// isCommitID reports whether id is <dot-uuid>@<commit-uuid>.
func isCommitID(id string) bool {
	dot, c, ok := strings.Cut(id, "@")
	return ok && isDotID(dot) && isDotID(c)
}

// volumeParams parses CreateVolume parameters, once: the dot's spec
// carries them typed from here.
func volumeParams(m map[string]string) (zfsd.Params, error) {
	p, err := zfsd.ParseParams(m)
	if err != nil {
		return zfsd.Params{}, invalidf("%v", err)
	}
	return p, nil
}

// snapshotParams accepts only the snapshotter's metadata.
func snapshotParams(params map[string]string) error {
	for k := range params {
		if !strings.HasPrefix(k, zfsd.MetadataPrefix) {
			return invalidf("unknown snapshot parameter %q", k)
		}
	}
	return nil
}

// capacity turns a CapacityRange into bytes. def is used when no size is
// asked for; the answer is never below minCapacity.
func capacity(r *csi.CapacityRange, def int64) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, invalidf("capacity range: negative bytes (required %d, limit %d)", req, lim)
	}
	if lim > 0 && req > lim {
		return 0, statusf(outOfRange, "capacity range: required %d bytes is above the limit of %d", req, lim)
	}
	size := req
	if size == 0 {
		size = def
		if lim > 0 && size > lim {
			size = lim
		}
	}
	if size < minCapacity {
		if lim > 0 && lim < minCapacity {
			return 0, statusf(outOfRange, "capacity range: limit %d bytes is below the minimum of %d", lim, minCapacity)
		}
		size = minCapacity
	}
	return size, nil
}

// fits reports whether an existing size satisfies a range.
func fits(size int64, r *csi.CapacityRange) bool {
	return size >= r.GetRequiredBytes() && (r.GetLimitBytes() == 0 || size <= r.GetLimitBytes())
}

// checkCapabilities refuses what the driver cannot serve.
func checkCapabilities(caps []*csi.VolumeCapability, zvols bool) error {
	if len(caps) == 0 {
		return invalidf("volume capabilities are required")
	}
	for _, c := range caps {
		if err := checkCapability(c, zvols); err != nil {
			return err
		}
	}
	return nil
}

func checkCapability(c *csi.VolumeCapability, zvols bool) error {
	if c == nil {
		return invalidf("volume capability is empty")
	}
	switch {
	case c.GetBlock() != nil:
		if !zvols {
			return invalidf("block access type needs zvols, and this ZFS (zfs-fuse) does not implement them; use the mount access type")
		}
	case c.GetMount() != nil:
		if fs := c.GetMount().GetFsType(); fs != "" && fs != "zfs" {
			return invalidf("fsType %q: dots are ZFS filesystems; leave fsType empty or set it to zfs", fs)
		}
	default:
		return invalidf("volume capability has no access type")
	}
	if c.GetAccessMode() == nil {
		return invalidf("volume capability has no access mode")
	}
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
		return nil
	case csi.VolumeCapability_AccessMode_UNKNOWN:
		return invalidf("access mode is unknown")
	}
	return invalidf("access mode %s: a dot is served by one node at a time", c.GetAccessMode().GetMode())
}

// checkPath makes sure a staging or target path lies strictly inside one of
// the allowed folders, after resolving symlinks in the part that exists.
func (d *Driver) checkPath(kind, p string) (string, error) {
	if p == "" {
		return "", invalidf("%s is required", kind)
	}
	if strings.ContainsRune(p, 0) || !filepath.IsAbs(p) {
		return "", invalidf("%s %q must be an absolute path", kind, p)
	}
	clean := filepath.Clean(p)
	resolved := resolveExisting(clean)
	for _, dir := range d.cfg.AllowedTargetDirs {
		dir = resolveExisting(filepath.Clean(dir))
		if rel, err := filepath.Rel(dir, resolved); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			return clean, nil
		}
	}
	return "", invalidf("%s %q is outside the allowed folders %v (see --allowed-target-dirs)", kind, p, d.cfg.AllowedTargetDirs)
}

// resolveExisting resolves symlinks in the longest existing prefix of p.
func resolveExisting(p string) string {
	rest := ""
	for cur := p; ; cur = filepath.Dir(cur) {
		if _, err := os.Lstat(cur); err == nil {
			if r, err := filepath.EvalSymlinks(cur); err == nil {
				return filepath.Join(r, rest)
			}
			return p
		}
		if cur == filepath.Dir(cur) {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
	}
}

// wantsBlock says whether capabilities ask for a raw block volume; asking
// for block and mount at once is refused.
func wantsBlock(caps []*csi.VolumeCapability) (bool, error) {
	block, mount := false, false
	for _, c := range caps {
		block = block || c.GetBlock() != nil
		mount = mount || c.GetMount() != nil
	}
	if block && mount {
		return false, invalidf("a volume is either block or mount, not both")
	}
	return block, nil
}

// blockSize rounds a zvol's size up to whole MiB, which every volblocksize
// divides.
func blockSize(size int64) int64 {
	const mib = 1 << 20
	return (size + mib - 1) / mib * mib
}
