// Package replication is the sending side of the replication protocol:
// which stream brings a copy of a dot on another pool up to date (from the
// newest commit both hold, after finishing an interrupted stream first, or
// in full over a diverged copy), and the order of a handoff. It knows
// neither gRPC nor ZFS: the sending pool is a Source (a *zfsd.Pool) and the
// receiving side a Peer, which pkg/zfsd/remote reaches over gRPC.
package replication

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// Source is what a push needs of the sending pool.
type Source interface {
	Name() string
	// Snapshots lists the pool's snapshots of a dot, oldest first.
	Snapshots(ctx context.Context, dotID string) ([]zfsd.Snapshot, error)
	// Send writes the stream from base ("" for all) up to commit.
	Send(ctx context.Context, dotID, base, commit string, w io.Writer) (int64, error)
	// ResumeInfo fails for a token this pool cannot resume.
	ResumeInfo(ctx context.Context, dotID, token string) (zfs.ResumeInfo, error)
	// SendResume writes the rest of the stream a token names.
	SendResume(ctx context.Context, dotID, token string, w io.Writer) (int64, error)
}

// Master is what a handoff needs, besides a push, of the pool holding the
// master copy.
type Master interface {
	Source
	Staged(ctx context.Context, dotID string) (bool, error)
	UnmountDot(ctx context.Context, dotID string) error
	CreateCommit(ctx context.Context, dotID, name string) (zfsd.Commit, error)
	SetRole(ctx context.Context, dotID string, master bool) error
}

var _ Master = (*zfsd.Pool)(nil)

// Peer is what a push needs of the receiving side.
type Peer interface {
	// String names the peer in logs.
	String() string
	// CopyOf says what the peer holds of a dot.
	CopyOf(ctx context.Context, dotID string) (Copy, error)
	// DropCopy destroys the peer's copy of a dot.
	DropCopy(ctx context.Context, dotID string) error
	// Receive gives the peer one stream: h, then what send writes. It
	// returns the bytes send wrote, and fails when either side did.
	Receive(ctx context.Context, h Header, send func(io.Writer) (int64, error)) (int64, error)
}

// Copy is what a pool holds of a dot.
type Copy struct {
	Snapshots []zfsd.Snapshot // oldest first
	// ResumeToken is left by a stream into the copy that broke off; "" for
	// none.
	ResumeToken string
}

// Header tells the receiver what a stream is.
type Header struct {
	DotID  string
	Base   string // "" for a full stream
	Commit string // the commit the copy holds once the stream is in
	Resume bool   // the rest of an interrupted stream
	Master bool   // the copy becomes the master as it arrives (a handoff)
}

// Validate checks a header that came over the network before anything of
// it names a dataset. The dot ID becomes <pool>/<dots root>/<id> in `zfs
// recv -F`: anything but a dot ID (a UUID, as the controller makes them)
// could name a child of another dot, or a dataset that is no dot at all.
// Base and Commit are snapshot names, when set.
func (h Header) Validate() error {
	if u, err := uuid.Parse(h.DotID); err != nil || u.String() != h.DotID {
		return fmt.Errorf("stream header: dot ID %q is not a dot ID (a lowercase UUID): %w", h.DotID, zfsd.ErrInvalid)
	}
	for _, s := range []struct{ what, name string }{{"base", h.Base}, {"commit", h.Commit}} {
		if s.name == "" {
			continue
		}
		if err := zfs.ValidateSnapshot("pool@" + s.name); err != nil {
			return fmt.Errorf("stream header: %s %q is not a snapshot name: %w", s.what, s.name, zfsd.ErrInvalid)
		}
	}
	return nil
}

// Result says what a push did.
type Result struct {
	Commit       string // the newest commit, which the peer now holds
	Base         string // the commit the last stream started from; "" for a full one
	Bytes        int64  // sent in all
	ResumedBytes int64  // of those, the rest of an interrupted stream
	Reseeded     bool   // the peer's copy had diverged and was replaced
}

// Push brings the peer's copy of a dot up to the source's newest commit:
// from the newest commit both hold, or in full when the peer has none. A
// peer that holds commits the source does not (it diverged) is dropped and
// re-seeded, never merged.
func Push(ctx context.Context, src Source, dst Peer, dotID string) (Result, error) {
	return push(ctx, src, dst, dotID, false)
}

// Handoff takes a final commit of a dot that is not in use on the source
// and pushes it to the peer, whose copy becomes the master as it arrives;
// the source's copy is a replica from then on. The caller flips the master
// in the cluster view afterwards.
func Handoff(ctx context.Context, src Master, dst Peer, dotID string) (Result, error) {
	staged, err := src.Staged(ctx, dotID)
	if err != nil {
		return Result{}, err
	}
	if staged {
		return Result{}, fmt.Errorf("dot %s is still staged on pool %s; unstage it there first: %w", dotID, src.Name(), zfsd.ErrBusy)
	}
	if err := src.UnmountDot(ctx, dotID); err != nil {
		return Result{}, err
	}
	if _, err := src.CreateCommit(ctx, dotID, ""); err != nil {
		return Result{}, err
	}
	r, err := push(ctx, src, dst, dotID, true)
	if err != nil {
		return Result{}, err
	}
	// From here this copy is a replica, whatever the caller does next.
	if err := src.SetRole(ctx, dotID, false); err != nil {
		return Result{}, err
	}
	return r, nil
}

func push(ctx context.Context, src Source, dst Peer, id string, handoff bool) (Result, error) {
	mine, err := src.Snapshots(ctx, id)
	if err != nil {
		return Result{}, err
	}
	if len(mine) == 0 {
		return Result{}, fmt.Errorf("dot %s has no commit on pool %s to push: %w", id, src.Name(), zfsd.ErrBusy)
	}
	theirs, err := dst.CopyOf(ctx, id)
	if err != nil {
		return Result{}, err
	}
	newest := mine[len(mine)-1].Name
	r := Result{Commit: newest}
	if theirs.ResumeToken != "" {
		n, ok, err := resume(ctx, src, dst, id, theirs.ResumeToken, handoff)
		if err != nil {
			return Result{}, err
		}
		r.Bytes, r.ResumedBytes = n, n
		if ok {
			// The resumed stream ended at a commit the peer now holds;
			// what comes after it goes as usual.
			if theirs, err = dst.CopyOf(ctx, id); err != nil {
				return Result{}, err
			}
		}
	}
	base, diverged := commonBase(mine, theirs.Snapshots)
	if diverged {
		klog.InfoS("replica diverged; re-seeding it", "dot", id, "target", dst.String())
		if err := dst.DropCopy(ctx, id); err != nil {
			return Result{}, err
		}
		base, r.Reseeded = "", true
	}
	if base == newest {
		return r, nil
	}
	r.Base = base
	n, err := dst.Receive(ctx, Header{DotID: id, Base: base, Commit: newest, Master: handoff},
		func(w io.Writer) (int64, error) { return src.Send(ctx, id, base, newest, w) })
	if err != nil {
		return Result{}, err
	}
	r.Bytes += n
	klog.InfoS("pushed", "dot", id, "target", dst.String(), "base", base, "commit", newest, "bytes", n)
	return r, nil
}

// resume finishes the stream an earlier push left half-received on the
// peer, from where it broke, and reports whether it did. A token the
// source cannot resume (its snapshots are gone, or another pool sent it)
// is not an error: the caller sends afresh, and the receiver discards the
// partial state before receiving that.
func resume(ctx context.Context, src Source, dst Peer, id, token string, handoff bool) (int64, bool, error) {
	info, err := src.ResumeInfo(ctx, id, token)
	if err != nil {
		klog.InfoS("cannot resume the interrupted stream; sending afresh", "dot", id, "target", dst.String(), "reason", err)
		return 0, false, nil
	}
	_, commit, _ := strings.Cut(info.ToName, "@")
	klog.InfoS("resuming an interrupted stream", "dot", id, "target", dst.String(), "commit", commit, "bytesReceived", info.Bytes)
	n, err := dst.Receive(ctx, Header{DotID: id, Commit: commit, Resume: true, Master: handoff},
		func(w io.Writer) (int64, error) { return src.SendResume(ctx, id, token, w) })
	if err != nil {
		return n, false, err
	}
	klog.InfoS("resumed", "dot", id, "target", dst.String(), "commit", commit, "bytes", n, "bytesBefore", info.Bytes)
	return n, true, nil
}

// commonBase finds the newest snapshot both sides hold (same name and
// GUID). The peer diverged when it has snapshots after that point, or has
// snapshots but none in common.
func commonBase(mine, theirs []zfsd.Snapshot) (base string, diverged bool) {
	have := map[string]string{}
	for _, s := range mine {
		have[s.Name] = s.GUID
	}
	last := -1
	for i, t := range theirs {
		if g, ok := have[t.Name]; ok && g == t.GUID {
			base, last = t.Name, i
		}
	}
	return base, len(theirs) > 0 && last != len(theirs)-1
}
