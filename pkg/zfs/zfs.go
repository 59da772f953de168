// Package zfs is a typed wrapper around the zfs and zpool commands. It never
// uses a shell, validates every name before it reaches a command, classifies
// failures into typed errors, and reads the output of both OpenZFS 2.x and
// zfs-fuse 0.7.
package zfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Options tunes a Client.
type Options struct {
	ZFS, Zpool string // binaries; default "zfs" and "zpool"
	// Mount is the mount binary, for legacy mounts; default "mount".
	Mount string
	// ProcFilesystems lists the kernel's filesystem types; default
	// "/proc/filesystems".
	ProcFilesystems string
	// MaxConcurrent bounds commands in flight; zfs-fuse serialises inside
	// its daemon anyway, and an unbounded burst only queues forks.
	MaxConcurrent int
	// BusyRetries and BusyDelay bound the unmount-and-retry loop for
	// "dataset is busy" (zfs-fuse reports it right after create or mount).
	BusyRetries int
	BusyDelay   time.Duration
}

// Client runs zfs and zpool.
type Client struct {
	run  Runner
	opts Options
	sem  chan struct{}

	featOnce sync.Once
	parsable bool // `zfs list -Hp` and `zpool list -Hp` work (OpenZFS)

	legacyOnce sync.Once
	legacy     bool // `mount -t zfs` works (OpenZFS's kernel module)

	// mountMu runs one `zfs mount` or `zfs unmount` at a time. zfs-fuse
	// has wedged for good (a new mount's FUSE INIT never answered, every
	// later call hanging) with four mounts and their first reads going at
	// once; two stages at once in one node plugin did it in the e2e
	// cluster. A mount takes tens of milliseconds, so the queue is short.
	mountMu sync.Mutex
}

// New returns a Client over r.
func New(r Runner, o Options) *Client {
	if o.ZFS == "" {
		o.ZFS = "zfs"
	}
	if o.Zpool == "" {
		o.Zpool = "zpool"
	}
	if o.Mount == "" {
		o.Mount = "mount"
	}
	if o.ProcFilesystems == "" {
		o.ProcFilesystems = "/proc/filesystems"
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 16
	}
	if o.BusyRetries <= 0 {
		o.BusyRetries = 20
	}
	if o.BusyDelay <= 0 {
		o.BusyDelay = 50 * time.Millisecond
	}
	return &Client{run: r, opts: o, sem: make(chan struct{}, o.MaxConcurrent)}
}

// Prop is one property to set at creation. A slice keeps argument order stable.
type Prop struct{ Name, Value string }

// PropsFromMap sorts a map into Props.
func PropsFromMap(m map[string]string) []Prop {
	ps := make([]Prop, 0, len(m))
	for k, v := range m {
		ps = append(ps, Prop{k, v})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	return ps
}

func (c *Client) exec(ctx context.Context, op, target, tool string, args ...string) (string, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return "", &Error{Kind: KindOther, Op: op, Target: target, Msg: ctx.Err().Error()}
	}
	defer func() { <-c.sem }()
	start := time.Now()
	out, stderr, err := c.run.Run(ctx, nil, tool, args...)
	klog.V(5).InfoS("ran", "cmd", tool, "args", args, "took", time.Since(start), "err", err)
	if err != nil {
		if ctx.Err() != nil {
			return "", &Error{Kind: KindOther, Op: op, Target: target, Msg: ctx.Err().Error()}
		}
		return string(out), newError(op, target, string(stderr), err)
	}
	return string(out), nil
}

func (c *Client) zfs(ctx context.Context, op, target string, args ...string) (string, error) {
	return c.exec(ctx, "zfs "+op, target, c.opts.ZFS, append([]string{op}, args...)...)
}

func (c *Client) zpool(ctx context.Context, op, target string, args ...string) (string, error) {
	return c.exec(ctx, "zpool "+op, target, c.opts.Zpool, append([]string{op}, args...)...)
}

func propArgs(props []Prop) ([]string, error) {
	var args []string
	for _, p := range props {
		if err := validateProp(p.Name, p.Value); err != nil {
			return nil, err
		}
		args = append(args, "-o", p.Name+"="+p.Value)
	}
	return args, nil
}

// Parsable reports whether the tools take -p on list commands (OpenZFS does,
// zfs-fuse does not). It asks the tool once instead of trusting a version.
func (c *Client) Parsable(ctx context.Context) bool {
	c.featOnce.Do(func() {
		_, err := c.zpool(ctx, "list", "", "-Hp", "-o", "name")
		c.parsable = err == nil
	})
	return c.parsable
}

// ---- pools ----

// CreatePool creates a pool on a single file vdev, not recorded in any
// cachefile: the driver, not the daemon's boot, owns imports.
func (c *Client) CreatePool(ctx context.Context, pool, vdev, mountpoint string, props []Prop) error {
	if err := ValidatePool(pool); err != nil {
		return err
	}
	args := []string{"-o", "cachefile=none", "-m", mountpoint}
	for _, p := range props {
		if err := validateProp(p.Name, p.Value); err != nil {
			return err
		}
		args = append(args, "-O", p.Name+"="+p.Value)
	}
	args = append(args, pool, vdev)
	_, err := c.zpool(ctx, "create", pool, args...)
	return err
}

// ImportPool imports pool from the files in dir.
func (c *Client) ImportPool(ctx context.Context, pool, dir string, force bool) error {
	if err := ValidatePool(pool); err != nil {
		return err
	}
	args := []string{"-d", dir, "-o", "cachefile=none"}
	if force {
		args = append(args, "-f")
	}
	_, err := c.zpool(ctx, "import", pool, append(args, pool)...)
	return err
}

// ExportPool exports pool; it fails with Busy while a dataset is in use.
func (c *Client) ExportPool(ctx context.Context, pool string) error {
	if err := ValidatePool(pool); err != nil {
		return err
	}
	_, err := c.zpool(ctx, "export", pool, pool)
	return err
}

// ListPools lists imported pools. Sizes are exact on OpenZFS and rounded on
// zfs-fuse; use PoolSpace for exact numbers.
func (c *Client) ListPools(ctx context.Context) ([]PoolStatus, error) {
	flags := "-H"
	if c.Parsable(ctx) {
		flags = "-Hp"
	}
	out, err := c.zpool(ctx, "list", "", flags, "-o", "name,size,free,health")
	if err != nil {
		// zfs-fuse prints "no pools available" on stdout with rc 0; some
		// versions use stderr. Either way there is nothing to list.
		if strings.Contains(err.Error(), "no pools available") {
			return nil, nil
		}
		return nil, err
	}
	if strings.TrimSpace(out) == "no pools available" {
		return nil, nil
	}
	return parseZpoolList(out)
}

// PoolImported reports whether pool is imported here.
func (c *Client) PoolImported(ctx context.Context, pool string) (bool, error) {
	pools, err := c.ListPools(ctx)
	if err != nil {
		return false, err
	}
	for _, p := range pools {
		if p.Name == pool {
			return true, nil
		}
	}
	return false, nil
}

// PoolSpace returns exact used and available bytes of a pool's root dataset,
// which both implementations print with -p.
func (c *Client) PoolSpace(ctx context.Context, pool string) (used, avail int64, err error) {
	ds, err := c.Get(ctx, []string{pool}, false, "used", "available")
	if err != nil {
		return 0, 0, err
	}
	if len(ds) != 1 {
		return 0, 0, &Error{Kind: KindNotFound, Op: "zfs get", Target: pool}
	}
	return ds[0].Bytes("used"), ds[0].Bytes("available"), nil
}

// ---- datasets ----

// Create creates a filesystem with its properties in one call, so a dataset
// never exists without them.
func (c *Client) Create(ctx context.Context, ds string, props []Prop) error {
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	return c.withProps(ctx, "create", ds, props, ds)
}

// CreateVolume creates a zvol of size bytes.
func (c *Client) CreateVolume(ctx context.Context, ds string, size int64, props []Prop) error {
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	// Sparse (-s): capacity is a limit, not a reservation, as for filesystems.
	return c.withProps(ctx, "create", ds, props, "-s", "-V", fmt.Sprint(size), ds)
}

// Snapshot takes snap ("ds@name") with its properties.
func (c *Client) Snapshot(ctx context.Context, snap string, props []Prop) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	return c.withProps(ctx, "snapshot", snap, props, snap)
}

// Clone makes ds from snap.
func (c *Client) Clone(ctx context.Context, snap, ds string, props []Prop) error {
	if err := ValidateSnapshot(snap); err != nil {
		return err
	}
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	return c.withProps(ctx, "clone", ds, props, snap, ds)
}

// withProps runs a verb that makes target, with props set by -o in the same
// call, so what it makes never exists without them.
func (c *Client) withProps(ctx context.Context, verb, target string, props []Prop, rest ...string) error {
	args, err := propArgs(props)
	if err != nil {
		return err
	}
	_, err = c.zfs(ctx, verb, target, append(args, rest...)...)
	return err
}

func validateAny(name string) error {
	if strings.Contains(name, "@") {
		return ValidateSnapshot(name)
	}
	return ValidateDataset(name)
}

// Set sets one property; zfs-fuse takes one per call.
func (c *Client) Set(ctx context.Context, name, prop, value string) error {
	if err := validateAny(name); err != nil {
		return err
	}
	if err := validateProp(prop, value); err != nil {
		return err
	}
	_, err := c.zfs(ctx, "set", name, prop+"="+value, name)
	return err
}

// Inherit clears a property set on name, so it inherits again; for a user
// property with nothing to inherit that removes it.
func (c *Client) Inherit(ctx context.Context, name, prop string) error {
	if err := validateAny(name); err != nil {
		return err
	}
	if err := validateProp(prop, ""); err != nil {
		return err
	}
	_, err := c.zfs(ctx, "inherit", name, prop, name)
	return err
}

// Get reads props of names (and, with recursive, of their descendants and
// snapshots) in exact bytes. Both implementations support these flags.
func (c *Client) Get(ctx context.Context, names []string, recursive bool, props ...string) ([]Dataset, error) {
	for _, n := range names {
		if err := validateAny(n); err != nil {
			return nil, err
		}
	}
	for _, p := range props {
		if err := validateProp(p, ""); err != nil {
			return nil, err
		}
	}
	args := []string{"-Hp", "-o", "name,property,value,source"}
	if recursive {
		args = append(args, "-r")
	}
	args = append(args, strings.Join(props, ","))
	args = append(args, names...)
	out, err := c.zfs(ctx, "get", strings.Join(names, " "), args...)
	if err != nil {
		return nil, err
	}
	return parseGet(out)
}

// Exists reports whether a dataset or snapshot exists.
func (c *Client) Exists(ctx context.Context, name string) (bool, error) {
	_, err := c.Get(ctx, []string{name}, false, "type")
	if IsKind(err, KindNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Mount mounts a filesystem at its mountpoint; already mounted is success.
func (c *Client) Mount(ctx context.Context, ds string) error {
	err := c.mountCmd(ctx, "mount", ds)
	if err != nil && (IsKind(err, KindBusy) || strings.Contains(err.Error(), "already mounted")) {
		ds2, gerr := c.Get(ctx, []string{ds}, false, "mounted")
		if gerr == nil && len(ds2) == 1 && ds2[0].Props["mounted"].Value == "yes" {
			return nil
		}
	}
	return err
}

// Unmount unmounts a filesystem; not mounted is success.
func (c *Client) Unmount(ctx context.Context, ds string) error {
	err := c.mountCmd(ctx, "unmount", ds)
	if err != nil && strings.Contains(err.Error(), "not currently mounted") {
		return nil
	}
	return err
}

// mountCmd runs `zfs mount` or `zfs unmount` on ds, one at a time per
// process: zfs-fuse wedged for good under concurrent mounts.
func (c *Client) mountCmd(ctx context.Context, verb, ds string) error {
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	c.mountMu.Lock()
	defer c.mountMu.Unlock()
	_, err := c.zfs(ctx, verb, ds, ds)
	return err
}

// MountLegacy mounts ds, whose mountpoint is "legacy", at path with
// `mount -t zfs` (see LegacyMount). It does not check what path holds
// already: callers that must be idempotent read mountinfo first.
func (c *Client) MountLegacy(ctx context.Context, ds, path string) error {
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	if !strings.HasPrefix(path, "/") || path != filepath.Clean(path) {
		return &Error{Kind: KindInvalid, Op: "mount -t zfs", Target: ds, Msg: fmt.Sprintf("mount path %q must be clean and absolute", path)}
	}
	_, err := c.exec(ctx, "mount -t zfs", ds, c.opts.Mount, "-t", "zfs", ds, path)
	return err
}

// retryBusy runs f, and while it fails with Busy unmounts ds and retries
// every BusyDelay, at most BusyRetries times. zfs-fuse reports "dataset is
// busy" for a rename or destroy right after mount even with no user.
func (c *Client) retryBusy(ctx context.Context, ds string, f func() error) error {
	err := f()
	for i := 0; i < c.opts.BusyRetries && IsKind(err, KindBusy); i++ {
		if ds != "" {
			if uerr := c.Unmount(ctx, ds); uerr != nil && !IsKind(uerr, KindNotFound) {
				klog.V(4).InfoS("unmount before retry failed", "dataset", ds, "err", uerr)
			}
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(c.opts.BusyDelay):
		}
		err = f()
	}
	return err
}

// Destroy destroys a dataset or snapshot. recursive also takes its snapshots
// (never clones elsewhere: -r, not -R). Missing is reported as NotFound.
func (c *Client) Destroy(ctx context.Context, name string, recursive bool) error {
	if err := validateAny(name); err != nil {
		return err
	}
	args := []string{}
	if recursive {
		args = append(args, "-r")
	}
	args = append(args, name)
	ds := name
	if strings.Contains(name, "@") {
		ds = ""
	}
	return c.retryBusy(ctx, ds, func() error {
		_, err := c.zfs(ctx, "destroy", name, args...)
		return err
	})
}

// Rename renames a dataset, unmounting it if zfs-fuse says busy.
func (c *Client) Rename(ctx context.Context, from, to string) error {
	if err := validateAny(from); err != nil {
		return err
	}
	if err := validateAny(to); err != nil {
		return err
	}
	ds := from
	if strings.Contains(from, "@") {
		ds = ""
	}
	return c.retryBusy(ctx, ds, func() error {
		_, err := c.zfs(ctx, "rename", from, from, to)
		return err
	})
}

// ---- streams ----

// SendOptions selects a full or incremental stream.
type SendOptions struct {
	From       string // -i: incremental from this snapshot
	FromAll    string // -I: incremental with every snapshot in between
	Replicate  bool   // -R: the dataset with all its snapshots up to this one
	Properties bool   // -p: carry properties
}

// Send writes the stream of snap to w and returns the bytes written.
func (c *Client) Send(ctx context.Context, snap string, o SendOptions, w io.Writer) (int64, error) {
	if err := ValidateSnapshot(snap); err != nil {
		return 0, err
	}
	args := []string{"send"}
	if o.Properties {
		args = append(args, "-p")
	}
	if o.Replicate {
		args = append(args, "-R")
	}
	for flag, from := range map[string]string{"-i": o.From, "-I": o.FromAll} {
		if from == "" {
			continue
		}
		if err := ValidateSnapshot(from); err != nil {
			return 0, err
		}
		args = append(args, flag, from)
	}
	args = append(args, snap)
	return c.stream(ctx, snap, w, args...)
}

// stream runs `zfs send ARGS` into w and returns the bytes written.
func (c *Client) stream(ctx context.Context, target string, w io.Writer, args ...string) (int64, error) {
	p, err := c.run.Start(ctx, c.opts.ZFS, args...)
	if err != nil {
		return 0, wrap("zfs send", target, err)
	}
	n, copyErr := io.Copy(w, p.Stdout())
	if copyErr != nil {
		// The receiving side is gone. Closing our end makes zfs send fail
		// on its next write; Wait would otherwise wait for a process
		// blocked on a pipe nobody reads.
		_ = p.Stdout().Close()
	}
	stderr, werr := p.Wait()
	if copyErr != nil {
		return n, wrap("zfs send", target, copyErr)
	}
	if werr != nil {
		return n, newError("zfs send", target, string(stderr), werr)
	}
	return n, nil
}

// ReceiveOptions tunes a receive.
type ReceiveOptions struct {
	// Force rolls the target back to its newest snapshot first (-F).
	Force bool
	// Resumable keeps what arrived when the stream breaks (-s), so the
	// sender can resume from the receive_resume_token instead of starting
	// over. Only where ResumableReceive is true: zfs-fuse has no -s.
	Resumable bool
}

// Receive reads a stream from r into ds, unmounted (-u).
func (c *Client) Receive(ctx context.Context, ds string, o ReceiveOptions, r io.Reader) error {
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	args := []string{"recv", "-u"}
	if o.Force {
		args = append(args, "-F")
	}
	if o.Resumable {
		args = append(args, "-s")
	}
	args = append(args, ds)
	_, stderr, err := c.run.Run(ctx, r, c.opts.ZFS, args...)
	if err != nil {
		return newError("zfs recv", ds, string(stderr), err)
	}
	return nil
}

// Copy sends snap into a new dataset dst on the same host, in-process: the
// stream goes through a pipe, never a shell. It returns the stream size.
func (c *Client) Copy(ctx context.Context, snap, dst string, o SendOptions) (int64, error) {
	if err := ValidateDataset(dst); err != nil {
		return 0, err
	}
	pr, pw := io.Pipe()
	var sent int64
	var sendErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		sent, sendErr = c.Send(ctx, snap, o, pw)
		pw.CloseWithError(sendErr)
	}()
	recvErr := c.Receive(ctx, dst, ReceiveOptions{}, pr)
	pr.CloseWithError(errors.New("receiver finished"))
	<-done
	if sendErr != nil {
		return sent, sendErr
	}
	return sent, recvErr
}
