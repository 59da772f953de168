package zfs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Property is one value of a dataset property as `zfs get` reports it.
type Property struct {
	Value  string
	Source string // "local", "received", "default", "-", "inherited from X"
}

// Own reports whether the property was set on this dataset itself. User
// properties are inherited by snapshots and children, so readers of
// io.dotmesh:* must ignore the inherited copies.
func (p Property) Own() bool {
	return p.Source == "local" || p.Source == "received"
}

// Dataset is the set of properties read for one filesystem, volume or snapshot.
type Dataset struct {
	Name  string
	Props map[string]Property
}

// Type is "filesystem", "volume" or "snapshot".
func (d Dataset) Type() string { return d.Props["type"].Value }

// Bytes returns a numeric property, or 0 when it is "-", "none" or absent.
func (d Dataset) Bytes(prop string) int64 {
	n, err := parseBytes(d.Props[prop].Value)
	if err != nil {
		return 0
	}
	return n
}

// OwnValue returns a property's value only when set on this dataset.
func (d Dataset) OwnValue(prop string) string {
	p, ok := d.Props[prop]
	if !ok || !p.Own() || p.Value == "-" {
		return ""
	}
	return p.Value
}

// parseGet parses `zfs get -H[p] -o name,property,value,source` output. Both
// OpenZFS 2.x and zfs-fuse print one tab-separated line per (dataset,
// property); the order of datasets is kept.
func parseGet(out string) ([]Dataset, error) {
	rows, err := splitRows(out, 4, "zfs get")
	if err != nil {
		return nil, err
	}
	var list []Dataset
	index := map[string]int{}
	for _, f := range rows {
		i, ok := index[f[0]]
		if !ok {
			i = len(list)
			index[f[0]] = i
			list = append(list, Dataset{Name: f[0], Props: map[string]Property{}})
		}
		list[i].Props[f[1]] = Property{Value: f[2], Source: f[3]}
	}
	return list, nil
}

// parseBytes reads an exact byte count ("1073741824", from -p) or a human
// size ("1016M", "1.98G", "3.31E", from zfs-fuse which has no -p for zpool).
// Human sizes are approximations the tool rounded; callers that need exact
// bytes ask the pool's root dataset with `zfs get -Hp` instead.
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "-" || s == "none" {
		return 0, fmt.Errorf("no size in %q", s)
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		// No size is negative; "-5" is as wrong as "-5M" (found by
		// FuzzParseBytes), and a caller comparing sizes must never see one.
		if n < 0 {
			return 0, fmt.Errorf("negative size %q", s)
		}
		return n, nil
	}
	mult := float64(1)
	// A unit letter multiplies by 1024 to the power of its place here.
	if i := strings.IndexByte("BKMGTPE", s[len(s)-1]&^0x20); i >= 0 {
		mult, s = math.Pow(1024, float64(i)), s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("bad size %q", s)
	}
	v := f * mult
	// float64(math.MaxInt64) is 2^63, one past the largest int64, and
	// converting it wraps to a negative number: "8E" is exactly 2^63
	// (found by FuzzParseBytes), so the bound is inclusive.
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q overflows", s)
	}
	return int64(v), nil
}

// PoolStatus is one line of `zpool list`.
type PoolStatus struct {
	Name   string
	Size   int64 // approximate on zfs-fuse (human units)
	Free   int64
	Health string
}

// parseZpoolList parses `zpool list -H[p] -o name,size,free,health`.
func parseZpoolList(out string) ([]PoolStatus, error) {
	rows, err := splitRows(out, 4, "zpool list")
	if err != nil {
		return nil, err
	}
	var list []PoolStatus
	for _, f := range rows {
		size, err := parseBytes(f[1])
		if err != nil {
			return nil, fmt.Errorf("zpool list: size of %s: %w", f[0], err)
		}
		free, err := parseBytes(f[2])
		if err != nil {
			return nil, fmt.Errorf("zpool list: free of %s: %w", f[0], err)
		}
		list = append(list, PoolStatus{Name: f[0], Size: size, Free: free, Health: f[3]})
	}
	return list, nil
}

// splitRows splits scripted (-H) output into its tab-separated fields, refusing a
// line with another count: a tool that changed its columns must fail loudly
// rather than have its values read as the wrong properties.
func splitRows(out string, fields int, cmd string) ([][]string, error) {
	var rows [][]string
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != fields {
			return nil, fmt.Errorf("%s: unexpected line %q", cmd, line)
		}
		rows = append(rows, f)
	}
	return rows, nil
}
