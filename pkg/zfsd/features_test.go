//go:build zfs

package zfsd_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dotmesh-io/dotmesh-csi/internal/zfstest"
	"github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func zfsGet(t *testing.T, prop, ds string) string {
	t.Helper()
	out, err := exec.Command("zfs", "get", "-H", "-o", "value", prop, ds).CombinedOutput()
	if err != nil {
		t.Fatalf("zfs get %s %s: %v: %s", prop, ds, err, out)
	}
	return strings.TrimSpace(string(out))
}

// mountsAt lists the mounts stacked exactly at path.
func mountsAt(t *testing.T, path string) []mountinfo.Mount {
	t.Helper()
	ms, err := mountinfo.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []mountinfo.Mount
	for _, m := range ms {
		if m.MountPoint == path {
			out = append(out, m)
		}
	}
	return out
}

// TestDotsMountLegacyWhereTheKernelHasZFS: with OpenZFS's module the kernel
// has a "zfs" filesystem, and dots are mountpoint=legacy, mounted with
// mount -t zfs at their path, idempotently; zfs-fuse keeps mounting
// through the mountpoint property.
func TestDotsMountLegacyWhereTheKernelHasZFS(t *testing.T) {
	p, cfg := zfstest.Pool(t, 256<<20)
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	kernelZFS := strings.Contains(string(fs), "\tzfs\n")
	if p.LegacyMounts() != kernelZFS {
		t.Fatalf("legacy mounts %v, but the kernel's filesystems list zfs: %v", p.LegacyMounts(), kernelZFS)
	}
	d := newDot(t, p, "legacy")
	ds := cfg.Name + "/dots/" + d.ID
	path := mount(t, p, d.ID)
	if !p.LegacyMounts() {
		t.Logf("no legacy mounts here (the kernel has no zfs filesystem); dots mount through their mountpoint property")
		if mp := zfsGet(t, "mountpoint", ds); mp == "legacy" {
			t.Fatalf("dot's mountpoint is legacy on a ZFS that cannot mount it")
		}
		if zfsGet(t, "mounted", ds) != "yes" {
			t.Fatal("dot not mounted")
		}
		return
	}
	if mp := zfsGet(t, "mountpoint", ds); mp != "legacy" {
		t.Fatalf("dot's mountpoint %q, want legacy", mp)
	}
	check := func(want int) {
		t.Helper()
		ms := mountsAt(t, path)
		if len(ms) != want {
			t.Fatalf("%d mounts at %s, want %d: %+v", len(ms), path, want, ms)
		}
		for _, m := range ms {
			if m.FSType != "zfs" || m.Source != ds {
				t.Fatalf("mount at %s is %s from %s, want zfs from %s", path, m.FSType, m.Source, ds)
			}
		}
	}
	check(1)
	// A retried stage mounts nothing more.
	if again, err := p.MountDot(ctx(t), d.ID); err != nil || again != path {
		t.Fatalf("second mount: %q, %v", again, err)
	}
	check(1)
	if err := p.UnmountDot(ctx(t), d.ID); err != nil {
		t.Fatal(err)
	}
	check(0)
	if err := p.UnmountDot(ctx(t), d.ID); err != nil {
		t.Fatalf("unmounting an unmounted dot: %v", err)
	}

	// A dot from before legacy mounts (its mountpoint inherited) moves
	// over on its next mount.
	if out, err := exec.Command("zfs", "inherit", "mountpoint", ds).CombinedOutput(); err != nil {
		t.Fatalf("zfs inherit: %v: %s", err, out)
	}
	if out, err := exec.Command("zfs", "unmount", ds).CombinedOutput(); err != nil && !strings.Contains(string(out), "not currently mounted") {
		t.Fatalf("zfs unmount: %v: %s", err, out)
	}
	if err := p.Reload(ctx(t), d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.MountDot(ctx(t), d.ID); err != nil {
		t.Fatal(err)
	}
	if mp := zfsGet(t, "mountpoint", ds); mp != "legacy" {
		t.Fatalf("old dot's mountpoint %q after mounting, want legacy", mp)
	}
	check(1)
	if err := p.DeleteDot(ctx(t), d.ID); err != nil {
		t.Fatalf("deleting a legacy-mounted dot: %v", err)
	}
	check(0)
}

// TestCompressionNeedsThePoolFeature asks for each compression value that
// needs a pool feature: ZFS itself is the judge of what the pool can do,
// and a refusal says so as invalid, names why, and makes nothing.
func TestCompressionNeedsThePoolFeature(t *testing.T) {
	p, cfg := zfstest.Pool(t, 256<<20)
	info, err := p.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"lz4", "zstd", "zstd-3", "gzip-9"} {
		// Ground truth: does ZFS take it on this pool?
		probe := cfg.Name + "/probe"
		canDo := exec.Command("zfs", "create", "-o", "canmount=off", "-o", "compression="+v, probe).Run() == nil
		if canDo {
			// Through the client: zfs-fuse often says "busy" right after a create.
			if err := zfstest.Client().Destroy(ctx(t), probe, false); err != nil {
				t.Fatal(err)
			}
		}
		id := uuid.NewString()
		_, err := p.CreateDot(ctx(t), zfsd.DotSpec{ID: id, Name: "c-" + v, Capacity: 64 << 20, Params: zfsd.Params{Compression: v}})
		if canDo {
			if err != nil {
				t.Errorf("compression=%s, which ZFS takes here: %v", v, err)
			} else if got := zfsGet(t, "compression", cfg.Name+"/dots/"+id); got != v {
				t.Errorf("compression=%s made a dot with compression %s", v, got)
			}
			continue
		}
		algo, _, _ := strings.Cut(v, "-")
		if !errors.Is(err, zfsd.ErrInvalid) || !strings.Contains(err.Error(), "pool "+cfg.Name+" does not support "+algo+" compression") ||
			!strings.Contains(err.Error(), "compression=\""+v+"\"") {
			t.Errorf("compression=%s, which ZFS refuses here: %v; want invalid, naming the value, pool and algorithm", v, err)
		}
		if exists(t, cfg.Name+"/dots/"+id) {
			t.Errorf("compression=%s: a dataset was made before the refusal", v)
		}
		if info.Compression == nil || info.Compression[algo] {
			t.Errorf("pool info says %s compression is %v, but ZFS refuses it", algo, info.Compression)
		}
	}
}
