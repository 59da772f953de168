package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/errcode"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// chunkSize bounds one stream message; big enough that per-message cost
// vanishes next to the copy.
const chunkSize = 1 << 20

func (s *Server) Snapshots(ctx context.Context, r *api.DotRef) (*api.SnapshotList, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	snaps, err := pool.Snapshots(ctx, r.GetId())
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	// The sender asks for the snapshots to find where to send from; an
	// interrupted stream's token tells it to resume that first.
	tok, err := pool.ResumeToken(ctx, r.GetId())
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	out := &api.SnapshotList{ResumeToken: tok}
	for _, sn := range snaps {
		out.Snapshots = append(out.Snapshots, &api.Snapshot{Name: sn.Name, Guid: sn.GUID})
	}
	return out, nil
}

func (s *Server) DropCopy(ctx context.Context, r *api.DotRef) (*api.Empty, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	return &api.Empty{}, errcode.ToStatus(pool.DropCopy(ctx, r.GetId()))
}

// Receive pipes the chunks of a send stream into `zfs recv`.
func (s *Server) Receive(stream api.Zfsd_ReceiveServer) error {
	pool, err := s.pool(stream.Context())
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil || h.GetDotId() == "" {
		return status.Error(codes.InvalidArgument, "receive: the first message must carry a header with the dot ID")
	}
	unlock, err := s.lockDot(pool, h.GetDotId())
	if err != nil {
		return err
	}
	defer unlock()
	pr, pw := io.Pipe()
	var n int64
	go func() {
		data := first.GetData()
		for {
			if len(data) > 0 {
				if _, err := pw.Write(data); err != nil {
					return
				}
				n += int64(len(data))
			}
			m, err := stream.Recv()
			if err == io.EOF {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(fmt.Errorf("stream from sender broke: %w", err))
				return
			}
			data = m.GetData()
		}
	}()
	if h.GetResume() {
		err = pool.ReceiveResume(stream.Context(), h.GetDotId(), pr, h.GetMaster())
	} else {
		err = pool.Receive(stream.Context(), h.GetDotId(), pr, h.GetMaster())
	}
	pr.CloseWithError(errors.New("receiver done"))
	if err != nil {
		return errcode.ToStatus(err)
	}
	klog.InfoS("received", "pool", pool.Name(), "dot", h.GetDotId(), "base", h.GetBase(), "commit", h.GetCommit(), "resume", h.GetResume(), "bytes", n)
	return stream.SendAndClose(&api.ReceiveReply{Bytes: n})
}

// progressEvery is how often a long stream reports how far it has got.
const progressEvery = 256 << 20

// chunkWriter turns writes into stream messages and logs progress.
type chunkWriter struct {
	stream api.Zfsd_ReceiveClient
	dot    string
	start  time.Time
	sent   int64
	next   int64
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		n := min(len(p), chunkSize)
		if err := w.stream.Send(&api.ReceiveChunk{Data: p[:n]}); err != nil {
			return total, err
		}
		p, total = p[n:], total+n
	}
	w.sent += int64(total)
	if w.sent >= w.next {
		w.next += progressEvery
		secs := max(time.Since(w.start).Seconds(), 0.001)
		klog.InfoS("sending", "dot", w.dot, "bytes", w.sent, "MiBps", int(float64(w.sent)/(1<<20)/secs))
	}
	return total, nil
}

func (s *Server) Push(ctx context.Context, r *api.PushRequest) (*api.PushReply, error) {
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	unlock, err := s.lockDot(pool, r.GetDotId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.push(ctx, pool, r, false)
}

// push brings the target's copy up to this pool's newest commit: from the
// newest commit both hold, or in full when the target has none. A target
// that holds commits this pool does not (it diverged) is dropped and
// re-seeded, never merged.
//
// In a handoff the target's copy becomes the master as it arrives.
func (s *Server) push(ctx context.Context, pool *zfsd.Pool, r *api.PushRequest, handoff bool) (*api.PushReply, error) {
	if s.peers == nil {
		return nil, status.Error(codes.FailedPrecondition, "this zfsd has no peer identity; it cannot push")
	}
	id := r.GetDotId()
	mine, err := pool.Snapshots(ctx, id)
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	if len(mine) == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "dot %s has no commit on pool %s to push", id, pool.Name())
	}
	peer, err := s.peers.Client(r.GetTargetAddress(), r.GetTargetPool())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	theirs, err := peer.SnapshotList(ctx, id)
	if err != nil {
		return nil, err
	}
	newest := mine[len(mine)-1].Name
	reply := &api.PushReply{Commit: newest}
	if tok := theirs.GetResumeToken(); tok != "" {
		n, ok, err := s.resume(ctx, pool, peer, id, tok, r.GetTargetAddress(), handoff)
		reply.Bytes, reply.ResumedBytes = n, n
		if err != nil {
			return nil, err
		}
		if ok {
			// The resumed stream ended at a commit the target now holds;
			// what comes after it goes as usual.
			if theirs, err = peer.SnapshotList(ctx, id); err != nil {
				return nil, err
			}
		}
	}
	base, diverged := commonBase(mine, theirs.GetSnapshots())
	if diverged {
		klog.InfoS("replica diverged; re-seeding it", "dot", id, "target", r.GetTargetAddress())
		if err := peer.DropCopy(ctx, id); err != nil {
			return nil, errcode.ToStatus(err)
		}
		base, reply.Reseeded = "", true
	}
	if base == newest {
		return reply, nil
	}
	reply.Base = base
	n, err := s.stream(ctx, peer, &api.ReceiveHeader{DotId: id, Base: base, Commit: newest, Master: handoff}, r.GetTargetAddress(),
		func(w io.Writer) (int64, error) { return pool.Send(ctx, id, base, newest, w) })
	reply.Bytes += n
	if err != nil {
		return nil, err
	}
	klog.InfoS("pushed", "dot", id, "target", r.GetTargetAddress(), "base", base, "commit", newest, "bytes", n)
	return reply, nil
}

// resume finishes the stream an earlier push left half-received on the
// target, from where it broke, and reports whether it did. A token this
// pool cannot resume (its snapshots are gone, or another pool sent it) is
// not an error: the caller sends afresh, and the target discards the
// partial state before receiving that.
func (s *Server) resume(ctx context.Context, pool *zfsd.Pool, peer *Client, id, token, target string, handoff bool) (int64, bool, error) {
	info, err := pool.ResumeInfo(ctx, id, token)
	if err != nil {
		klog.InfoS("cannot resume the interrupted stream; sending afresh", "dot", id, "target", target, "reason", err)
		return 0, false, nil
	}
	_, commit, _ := strings.Cut(info.ToName, "@")
	klog.InfoS("resuming an interrupted stream", "dot", id, "target", target, "commit", commit, "bytesReceived", info.Bytes)
	n, err := s.stream(ctx, peer, &api.ReceiveHeader{DotId: id, Commit: commit, Resume: true, Master: handoff}, target,
		func(w io.Writer) (int64, error) { return pool.SendResume(ctx, id, token, w) })
	if err != nil {
		return n, false, err
	}
	klog.InfoS("resumed", "dot", id, "target", target, "commit", commit, "bytes", n, "bytesBefore", info.Bytes)
	return n, true, nil
}

// stream opens a Receive stream to peer, sends the header and then what
// send writes, and waits for the receiver's verdict.
func (s *Server) stream(ctx context.Context, peer *Client, h *api.ReceiveHeader, target string, send func(io.Writer) (int64, error)) (int64, error) {
	stream, err := peer.c.Receive(ctx)
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "opening a stream to %s: %v", target, err)
	}
	if err := stream.Send(&api.ReceiveChunk{Header: h}); err != nil {
		return 0, status.Errorf(codes.Unavailable, "stream to %s: %v", target, err)
	}
	n, sendErr := send(&chunkWriter{stream: stream, dot: h.GetDotId(), start: time.Now(), next: progressEvery})
	if sendErr != nil {
		// The receiver's own account of the break says more than the
		// broken pipe the sender saw.
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return n, fmt.Errorf("stream of dot %s to %s broke after %d bytes: %w (receiver: %v)", h.GetDotId(), target, n, errcode.ToStatus(sendErr), rerr)
		}
		return n, errcode.ToStatus(sendErr)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return n, err
	}
	return n, nil
}

// commonBase finds the newest snapshot both sides hold (same name and GUID).
// The target diverged when it has snapshots after that point, or has
// snapshots but none in common.
func commonBase(mine []zfsd.Snapshot, theirs []*api.Snapshot) (base string, diverged bool) {
	have := map[string]string{}
	for _, s := range mine {
		have[s.Name] = s.GUID
	}
	last := -1
	for i, t := range theirs {
		if g, ok := have[t.GetName()]; ok && g == t.GetGuid() {
			base, last = t.GetName(), i
		}
	}
	return base, len(theirs) > 0 && last != len(theirs)-1
}

// Handoff takes a final commit of a dot that is not in use here and pushes
// it to the new master's pool. The caller flips the master afterwards.
func (s *Server) Handoff(ctx context.Context, r *api.PushRequest) (*api.PushReply, error) {
	id := r.GetDotId()
	pool, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	unlock, err := s.lockDot(pool, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	staged, err := pool.Staged(ctx, id)
	if err != nil {
		return nil, errcode.ToStatus(err)
	}
	if staged {
		return nil, status.Errorf(codes.FailedPrecondition, "dot %s is still staged on pool %s; unstage it there first", id, pool.Name())
	}
	if err := pool.UnmountDot(ctx, id); err != nil {
		return nil, errcode.ToStatus(err)
	}
	if _, err := pool.CreateCommit(ctx, id, ""); err != nil {
		return nil, errcode.ToStatus(err)
	}
	reply, err := s.push(ctx, pool, r, true)
	if err != nil {
		return nil, err
	}
	// From here this copy is a replica, whatever the caller does next.
	if err := pool.SetRole(ctx, id, false); err != nil {
		return nil, errcode.ToStatus(err)
	}
	return reply, nil
}

// lockDot serialises stream work on one pool's copy of a dot; a second
// one is Aborted. Two pools of one node may each hold a copy, and a
// handoff between them streams from one to the other.
func (s *Server) lockDot(pool *zfsd.Pool, id string) (func(), error) {
	key := pool.Name() + "/" + id
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy == nil {
		s.busy = map[string]bool{}
	}
	if s.busy[key] {
		return nil, status.Errorf(codes.Aborted, "dot %s on pool %s: a push, receive or handoff is already in progress", id, pool.Name())
	}
	s.busy[key] = true
	return func() {
		s.mu.Lock()
		delete(s.busy, key)
		s.mu.Unlock()
	}, nil
}
