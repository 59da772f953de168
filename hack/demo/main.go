// Command demo runs the standalone driver on a pool under an ignored folder
// and drives it through its CSI socket: create a dot, publish it, write a
// file, commit, change the file, branch the commit, publish the branch and
// read the file back. It cleans up afterwards.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/dotmesh-io/dotmesh-csi/hack/csiclient"
)

func main() {
	bin := flag.String("node-bin", "bin/dotmesh-node", "the node plugin binary")
	work := flag.String("work", ".demo", "ignored folder for the pool, socket and mounts")
	flag.Parse()
	if err := run(*bin, *work); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) func() {
	start := time.Now()
	fmt.Printf("  %-58s", fmt.Sprintf(format, a...))
	return func() { fmt.Printf(" %7.1f ms\n", float64(time.Since(start).Microseconds())/1000) }
}

func run(bin, work string) (err error) {
	ctx := context.Background()
	_ = os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o750); err != nil {
		return err
	}
	fmt.Printf("dotmesh-csi demo: standalone driver, pool file in %s/data, CSI socket %s/csi.sock\n", work, work)
	d, err := csiclient.Start(bin, work, "dotmesh-demo", "256Mi")
	if err != nil {
		return err
	}
	var published []string
	var cleanup []func() error
	defer func() {
		fmt.Println("cleaning up")
		for _, id := range published {
			if e := d.Unpublish(ctx, id); e != nil && err == nil {
				err = e
			}
		}
		for i := len(cleanup) - 1; i >= 0; i-- {
			if e := cleanup[i](); e != nil && err == nil {
				err = e
			}
		}
		if e := d.Stop(); e != nil && err == nil {
			err = fmt.Errorf("driver shutdown: %w", e)
		}
		if exec.Command("zpool", "list", d.Pool).Run() == nil && err == nil {
			err = fmt.Errorf("pool %s still imported after shutdown", d.Pool)
		}
		if err == nil {
			fmt.Printf("  driver stopped, pool exported, %s removed\n", work)
			err = os.RemoveAll(work)
		}
	}()

	// newDot creates a 64 MiB volume (from source, if any), queues its
	// deletion and publishes it.
	newDot := func(name, source, label string) (id, target string, err error) {
		done := step("CreateVolume %s %s", name, label)
		if id, err = d.CreateVolume(ctx, name, 64<<20, source); err != nil {
			return "", "", err
		}
		done()
		cleanup = append(cleanup, func() error {
			_, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			return err
		})
		done = step("NodeStage + NodePublish %s", name)
		if target, err = d.Publish(ctx, id); err != nil {
			return "", "", err
		}
		published = append(published, id)
		done()
		return id, target, nil
	}

	dot, target, err := newDot("demo-dot", "", "(64 MiB)")
	if err != nil {
		return err
	}
	committed := fmt.Sprintf("hello from dot %s, written at %s\n", dot, time.Now().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(target, "hello.txt"), []byte(committed), 0o644); err != nil {
		return err
	}
	fmt.Printf("  wrote hello.txt: %q\n", committed)

	done := step("CreateSnapshot demo-commit (a commit)")
	snap, err := d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "demo-commit", SourceVolumeId: dot})
	if err != nil {
		return err
	}
	done()
	commit := snap.GetSnapshot().GetSnapshotId()
	cleanup = append(cleanup, func() error {
		_, err := d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: commit})
		return err
	})
	if err := os.WriteFile(filepath.Join(target, "hello.txt"), []byte("changed after the commit\n"), 0o644); err != nil {
		return err
	}
	fmt.Println("  changed hello.txt in demo-dot after the commit")

	_, btarget, err := newDot("demo-branch", commit, "from the commit")
	if err != nil {
		return err
	}
	got, err := os.ReadFile(filepath.Join(btarget, "hello.txt"))
	if err != nil {
		return err
	}
	fmt.Printf("  read hello.txt in the branch: %q\n", got)
	if string(got) != committed {
		return fmt.Errorf("the branch holds %q, not the committed %q", got, committed)
	}
	now, _ := os.ReadFile(filepath.Join(target, "hello.txt"))
	fmt.Printf("  demo-dot itself now holds:     %q\n", now)
	fmt.Println("OK: the branch holds the file as committed, and the dot went on independently")
	return nil
}
