package zfs

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// What a pool and the tools can do is asked of them, never inferred from a
// version number: zfs-fuse 0.7 and OpenZFS 2.x differ in ways no version
// string states (see docs/zfs-fuse.md), and a pool can have features
// disabled whatever its implementation.

// PoolFeatures is what `zpool get all` says about a pool.
type PoolFeatures struct {
	// Flags maps each feature flag the pool reports (without the
	// "feature@" prefix) to its state: "enabled", "active" or "disabled".
	// It is empty for a pool from before feature flags (zfs-fuse's pools
	// are version 23).
	Flags map[string]string
	// Version is the pool's version property: "23" on zfs-fuse, "-" (or
	// 5000) on a pool with feature flags.
	Version string
}

// Has reports whether a feature can be used on the pool now.
func (f PoolFeatures) Has(feature string) bool {
	s := f.Flags[feature]
	return s == "enabled" || s == "active"
}

// Why explains why a feature cannot be used, for error messages.
func (f PoolFeatures) Why(feature string) string {
	if len(f.Flags) == 0 {
		return fmt.Sprintf("the pool has no feature flags (pool version %s)", f.Version)
	}
	if s, ok := f.Flags[feature]; ok {
		return fmt.Sprintf("feature@%s is %s", feature, s)
	}
	return fmt.Sprintf("this ZFS does not know feature@%s", feature)
}

// compressionFeatures names the pool feature each compression algorithm
// newer than the original set (on, off, lzjb, gzip-N, zle) needs.
var compressionFeatures = map[string]string{"lz4": "lz4_compress", "zstd": "zstd_compress"}

// CompressionFeature returns the algorithm of a compression value ("zstd"
// for "zstd-7") and the pool feature it needs, or "" for a value every
// pool can take.
func CompressionFeature(value string) (algo, feature string) {
	algo, _, _ = strings.Cut(value, "-")
	return algo, compressionFeatures[algo]
}

// CompressionAlgorithms lists the algorithms that need a pool feature.
func CompressionAlgorithms() []string { return []string{"lz4", "zstd"} }

// GetPoolFeatures reads a pool's feature flags and version. zfs-fuse's
// `zpool get` takes no flags at all ("bad property list: invalid property
// '-H'"), so when -H is refused its table is read instead.
func (c *Client) GetPoolFeatures(ctx context.Context, pool string) (PoolFeatures, error) {
	if err := ValidatePool(pool); err != nil {
		return PoolFeatures{}, err
	}
	out, err := c.zpool(ctx, "get", pool, "-H", "-o", "property,value", "all", pool)
	if err == nil {
		return parsePoolProps(out, true)
	}
	if !IsKind(err, KindInvalid) {
		return PoolFeatures{}, err
	}
	out, err = c.zpool(ctx, "get", pool, "all", pool)
	if err != nil {
		return PoolFeatures{}, err
	}
	return parsePoolProps(out, false)
}

// parsePoolProps reads `zpool get -H -o property,value all` (tabbed) or
// zfs-fuse's `zpool get all` table (NAME PROPERTY VALUE SOURCE, aligned
// with spaces; no value there holds a space).
func parsePoolProps(out string, tabbed bool) (PoolFeatures, error) {
	f := PoolFeatures{Flags: map[string]string{}}
	seen := false
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var prop, value string
		if tabbed {
			fs := strings.Split(line, "\t")
			if len(fs) != 2 {
				return PoolFeatures{}, fmt.Errorf("zpool get: unexpected line %q", line)
			}
			prop, value = fs[0], fs[1]
		} else {
			fs := strings.Fields(line)
			if len(fs) < 3 {
				return PoolFeatures{}, fmt.Errorf("zpool get: unexpected line %q", line)
			}
			if fs[0] == "NAME" && fs[1] == "PROPERTY" {
				continue
			}
			prop, value = fs[1], fs[2]
		}
		seen = true
		if name, ok := strings.CutPrefix(prop, "feature@"); ok {
			f.Flags[name] = value
		} else if prop == "version" {
			f.Version = value
		}
	}
	if !seen {
		return PoolFeatures{}, fmt.Errorf("zpool get: no properties in %q", out)
	}
	return f, nil
}

// ResumableReceive reports whether the tools keep an interrupted receive
// (`zfs recv -s`) and resume it (`zfs send -t`), by asking for the
// receive_resume_token of the pool's root dataset. zfs-fuse does not know
// the property and fails the whole get. The pool must also have
// feature@extensible_dataset (see GetPoolFeatures), where the kernel keeps
// the partial state.
func (c *Client) ResumableReceive(ctx context.Context, pool string) (bool, error) {
	if err := ValidatePool(pool); err != nil {
		return false, err
	}
	_, err := c.Get(ctx, []string{pool}, false, "receive_resume_token")
	if IsKind(err, KindInvalid) {
		return false, nil
	}
	return err == nil, err
}

// LegacyMount reports whether a dataset with mountpoint=legacy can be
// mounted with `mount -t zfs`: the kernel has a filesystem type "zfs"
// (OpenZFS's module). zfs-fuse's datasets are FUSE mounts; the kernel has
// no such type and mount fails with "unknown filesystem type 'zfs'". It is
// read once per Client.
func (c *Client) LegacyMount() bool {
	c.legacyOnce.Do(func() {
		b, err := os.ReadFile(c.opts.ProcFilesystems)
		c.legacy = err == nil && parseFilesystems(string(b))["zfs"]
	})
	return c.legacy
}

// parseFilesystems reads /proc/filesystems: "[nodev]\tTYPE" per line.
func parseFilesystems(s string) map[string]bool {
	types := map[string]bool{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			types[f[len(f)-1]] = true
		}
	}
	return types
}
