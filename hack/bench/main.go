// Command bench measures the driver through its CSI socket against the bare
// zfs commands it issues, in the same run on the same pool, and prints a
// table. Operations alternate (driver, bare, driver, ...) so drift in the
// machine's load hits both sides alike.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/dotmesh-io/dotmesh-csi/hack/csiclient"
)

const volSize = 64 << 20

func main() {
	bin := flag.String("node-bin", "bin/dotmesh-node", "the node plugin binary")
	work := flag.String("work", ".cache/bench", "ignored folder for the pool and mounts")
	n := flag.Int("n", 60, "operations per row (at least 50 for a p99)")
	bigMiB := flag.Int("big-mib", 1024, "size of the dot branched against cp -a")
	flag.Parse()
	if err := run(*bin, *work, *n, *bigMiB); err != nil {
		fmt.Fprintln(os.Stderr, "bench failed:", err)
		os.Exit(1)
	}
}

type samples []time.Duration

func (s samples) pct(p float64) time.Duration {
	c := append(samples(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	i := int(float64(len(c)-1) * p)
	return c[i]
}

// add times f and keeps the sample if f succeeded.
func (s *samples) add(f func() error) error {
	t, err := timed(f)
	if err == nil {
		*s = append(*s, t)
	}
	return err
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

func zfs(args ...string) error {
	if out, err := exec.Command("zfs", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("zfs %v: %v: %s", args, err, out)
	}
	return nil
}

func run(bin, work string, n, bigMiB int) (err error) {
	ctx := context.Background()
	_ = os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o750); err != nil {
		return err
	}
	pool := "dotmesh-bench"
	d, err := csiclient.Start(bin, work, pool, fmt.Sprintf("%dMi", 2*bigMiB+1024))
	if err != nil {
		return err
	}
	defer func() {
		if e := d.Stop(); e != nil && err == nil {
			err = e
		}
		if exec.Command("zpool", "list", pool).Run() == nil {
			_ = exec.Command("zpool", "destroy", "-f", pool).Run()
		}
		_ = os.RemoveAll(work)
	}()
	bare := pool + "/bare"
	mnt, err := filepath.Abs(filepath.Join(work, "bare-mnt"))
	if err != nil {
		return err
	}
	if err := zfs("create", "-o", "canmount=off", "-o", "mountpoint="+filepath.Join(mnt, "ds"), bare); err != nil {
		return err
	}

	type row struct {
		name        string
		drv, base   samples
		baselineCmd string
	}
	var rows []*row
	add := func(name, cmd string) *row {
		r := &row{name: name, baselineCmd: cmd}
		rows = append(rows, r)
		return r
	}
	props := func(name string) []string {
		now := time.Now().UTC().Format(time.RFC3339Nano)
		return []string{"-o", "canmount=noauto", "-o", "refquota=" + strconv.Itoa(volSize), "-o", "io.dotmesh:managed=true",
			"-o", "io.dotmesh:id=" + uuid.NewString(), "-o", "io.dotmesh:name=" + name, "-o", "io.dotmesh:capacity=" + strconv.Itoa(volSize),
			"-o", "io.dotmesh:created=" + now}
	}

	// CreateVolume / DeleteVolume.
	rc := add("CreateVolume", "zfs create (same properties)")
	rd := add("DeleteVolume", "zfs destroy -r")
	var vols, bares []string
	for i := 0; i < n; i++ {
		var id string
		if err := rc.drv.add(func() (e error) { id, e = d.CreateVolume(ctx, fmt.Sprintf("bench-%d", i), volSize, ""); return }); err != nil {
			return err
		}
		vols = append(vols, id)
		ds := fmt.Sprintf("%s/v%d", bare, i)
		if err := rc.base.add(func() error { return zfs(append(append([]string{"create"}, props(ds)...), ds)...) }); err != nil {
			return err
		}
		bares = append(bares, ds)
	}
	for i := range vols {
		if err := rd.drv.add(func() error {
			_, e := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vols[i]})
			return e
		}); err != nil {
			return err
		}
		if err := rd.base.add(func() error { return zfs("destroy", "-r", bares[i]) }); err != nil {
			return err
		}
	}

	// CreateSnapshot and CreateVolume from a snapshot, on one source each.
	src, err := d.CreateVolume(ctx, "bench-src", volSize, "")
	if err != nil {
		return err
	}
	bsrc := bare + "/src"
	if err := zfs(append(append([]string{"create"}, props(bsrc)...), bsrc)...); err != nil {
		return err
	}
	rs := add("CreateSnapshot", "zfs snapshot (same properties)")
	rr := add("CreateVolume from snapshot", "zfs clone (same properties)")
	var snaps []string
	for i := 0; i < n; i++ {
		var sid string
		if err := rs.drv.add(func() error {
			r, e := d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: fmt.Sprintf("bench-snap-%d", i), SourceVolumeId: src})
			sid = r.GetSnapshot().GetSnapshotId()
			return e
		}); err != nil {
			return err
		}
		snaps = append(snaps, sid)
		snap := fmt.Sprintf("%s@c%d", bsrc, i)
		if err := rs.base.add(func() error {
			return zfs("snapshot", "-o", "io.dotmesh:commit-name=c", "-o", "io.dotmesh:commit-size="+strconv.Itoa(volSize),
				"-o", "io.dotmesh:commit-created="+time.Now().UTC().Format(time.RFC3339Nano), snap)
		}); err != nil {
			return err
		}
	}
	var restored []string
	for i := 0; i < n; i++ {
		var id string
		if err := rr.drv.add(func() (e error) {
			id, e = d.CreateVolume(ctx, fmt.Sprintf("bench-restore-%d", i), volSize, snaps[i])
			return
		}); err != nil {
			return err
		}
		restored = append(restored, id)
		ds := fmt.Sprintf("%s/r%d", bare, i)
		if err := rr.base.add(func() error {
			return zfs(append(append([]string{"clone"}, props(ds)...), fmt.Sprintf("%s@c%d", bsrc, i), ds)...)
		}); err != nil {
			return err
		}
	}

	// NodeStage + NodePublish against zfs mount + two bind mounts.
	// zfs-fuse mounts a clone at once whatever its canmount says; both sides
	// start each round from an unmounted dataset.
	rp := add("NodeStage+NodePublish", "zfs mount + 2 bind mounts")
	for i := 0; i < n; i++ {
		id := restored[i]
		ds := fmt.Sprintf("%s/r%d", bare, i)
		_ = zfs("unmount", pool+"/dots/"+id)
		_ = zfs("unmount", ds)
		if err := rp.drv.add(func() error { _, e := d.Publish(ctx, id); return e }); err != nil {
			return err
		}
		if err := d.Unpublish(ctx, id); err != nil {
			return err
		}
		mp := filepath.Join(mnt, "ds", "r"+strconv.Itoa(i))
		staging := filepath.Join(mnt, "staging", strconv.Itoa(i))
		target := filepath.Join(mnt, "target", strconv.Itoa(i))
		for _, p := range []string{staging, target} {
			if err := os.MkdirAll(p, 0o750); err != nil {
				return err
			}
		}
		if err := rp.base.add(func() error {
			if err := zfs("mount", ds); err != nil {
				return err
			}
			if err := unix.Mount(mp, staging, "", unix.MS_BIND, ""); err != nil {
				return err
			}
			return unix.Mount(staging, target, "", unix.MS_BIND, "")
		}); err != nil {
			return err
		}
		_ = unix.Unmount(target, 0)
		_ = unix.Unmount(staging, 0)
		_ = zfs("unmount", ds)
	}

	fmt.Printf("\ndotmesh-csi bench: %d operations per row, zfs-fuse pool %s, through the CSI socket\n\n", n, pool)
	fmt.Printf("| %-26s | %9s | %9s | %9s | %9s | %14s | %-30s |\n", "operation", "drv p50", "drv p99", "zfs p50", "zfs p99", "overhead (p50)", "baseline")
	fmt.Printf("|%s|%s|%s|%s|%s|%s|%s|\n", dash(28), dash(11), dash(11), dash(11), dash(11), dash(16), dash(32))
	for _, r := range rows {
		ratio := float64(r.drv.pct(0.5)) / float64(r.base.pct(0.5))
		fmt.Printf("| %-26s | %9s | %9s | %9s | %9s | %13.2fx | %-30s |\n", r.name, ms(r.drv.pct(0.5)), ms(r.drv.pct(0.99)),
			ms(r.base.pct(0.5)), ms(r.base.pct(0.99)), ratio, r.baselineCmd)
	}
	fmt.Println("(times in ms)")

	return branchVersusCopy(ctx, d, bigMiB)
}

func dash(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '-'
	}
	return string(b)
}

// branchVersusCopy fills a dot with incompressible data, then times a
// branch (commit + CreateVolume from it) against `cp -a` of the same data
// into another dot followed by a sync, which is what a copying driver pays.
func branchVersusCopy(ctx context.Context, d *csiclient.Driver, mib int) error {
	size := int64(mib+64) << 20
	src, dir, err := newPublished(ctx, d, "bench-big", size)
	if err != nil {
		return err
	}
	defer d.Unpublish(ctx, src)
	fmt.Printf("\nwriting %d MiB of random data into a dot ...\n", mib)
	f, err := os.Create(filepath.Join(dir, "data"))
	if err != nil {
		return err
	}
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(io.MultiWriter(f, h), rng, int64(mib)<<20); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	f.Close()
	want := fmt.Sprintf("%x", h.Sum(nil))

	// Settle the source on disk first (a throwaway snapshot forces the
	// pending transaction group), so both sides start from the same state.
	settle := fmt.Sprintf("%s/dots/%s@settle", d.Pool, src)
	if err := zfs("snapshot", settle); err != nil {
		return err
	}
	if err := zfs("destroy", settle); err != nil {
		return err
	}
	var branch string
	var branches samples
	for i := 0; i < 5; i++ {
		if err := branches.add(func() error {
			r, e := d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: fmt.Sprintf("bench-big-commit-%d", i), SourceVolumeId: src})
			if e != nil {
				return e
			}
			branch, e = d.CreateVolume(ctx, fmt.Sprintf("bench-big-branch-%d", i), size, r.GetSnapshot().GetSnapshotId())
			return e
		}); err != nil {
			return err
		}
	}
	branchTime := branches.pct(0.5)
	bdir, err := d.Publish(ctx, branch)
	if err != nil {
		return err
	}
	defer d.Unpublish(ctx, branch)
	if got := sum(filepath.Join(bdir, "data")); got != want {
		return fmt.Errorf("branch data %s, want %s", got, want)
	}

	dst, cdir, err := newPublished(ctx, d, "bench-big-copy", size)
	if err != nil {
		return err
	}
	defer d.Unpublish(ctx, dst)
	copyTime, err := timed(func() error {
		if out, err := exec.Command("cp", "-a", filepath.Join(dir, "data"), filepath.Join(cdir, "data")).CombinedOutput(); err != nil {
			return fmt.Errorf("cp -a: %v: %s", err, out)
		}
		return exec.Command("sync", "-f", filepath.Join(cdir, "data")).Run()
	})
	if err != nil {
		return err
	}
	if got := sum(filepath.Join(cdir, "data")); got != want {
		return fmt.Errorf("copy data %s, want %s", got, want)
	}
	fmt.Printf("\n| %-50s | %10s |\n", fmt.Sprintf("%d MiB dot", mib), "time")
	fmt.Printf("|%s|%s|\n", dash(52), dash(12))
	fmt.Printf("| %-50s | %7s ms |\n", "branch: CreateSnapshot + CreateVolume (p50 of 5)", ms(branchTime))
	fmt.Printf("| %-50s | %7s ms |\n", "cp -a into another dot + sync", ms(copyTime))
	fmt.Printf("\nbranching is %.0fx faster than copying (checksums of branch and copy match the source)\n",
		float64(copyTime)/float64(branchTime))
	return nil
}

func sum(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// newPublished creates an empty volume and publishes it; the caller
// unpublishes it.
func newPublished(ctx context.Context, d *csiclient.Driver, name string, size int64) (id, dir string, err error) {
	if id, err = d.CreateVolume(ctx, name, size, ""); err != nil {
		return "", "", err
	}
	dir, err = d.Publish(ctx, id)
	return id, dir, err
}
