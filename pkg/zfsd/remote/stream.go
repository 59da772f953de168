package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/errcode"
	"github.com/dotmesh-io/dotmesh-csi/pkg/replication"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// The replication protocol (what to send, and the order of a handoff) is
// pkg/replication's; this file carries it: the receiving side's calls on
// this zfsd, and a peer zfsd as the replication.Peer a push sends to.

// chunkSize bounds one stream message; big enough that per-message cost
// vanishes next to the copy.
const chunkSize = 1 << 20

// progressEvery is how often a long stream reports how far it has got.
const progressEvery = 256 << 20

func (s *Server) Snapshots(ctx context.Context, r *api.DotRef) (*api.SnapshotList, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.SnapshotList, error) {
		snaps, err := pool.Snapshots(ctx, r.GetId())
		if err != nil {
			return nil, err
		}
		// The sender asks for the snapshots to find where to send from; an
		// interrupted stream's token tells it to resume that first.
		tok, err := pool.ResumeToken(ctx, r.GetId())
		if err != nil {
			return nil, err
		}
		out := &api.SnapshotList{ResumeToken: tok}
		for _, sn := range snaps {
			out.Snapshots = append(out.Snapshots, &api.Snapshot{Name: sn.Name, Guid: sn.GUID})
		}
		return out, nil
	})
}

func (s *Server) DropCopy(ctx context.Context, r *api.DotRef) (*api.Empty, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.Empty, error) { return &api.Empty{}, pool.DropCopy(ctx, r.GetId()) })
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
	if err := headerFromAPI(h).Validate(); err != nil {
		return status.Error(codes.InvalidArgument, "receive: "+err.Error())
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

// Push brings the copy on the target pool up to this pool's newest commit.
func (s *Server) Push(ctx context.Context, r *api.PushRequest) (*api.PushReply, error) {
	return s.replicate(ctx, r, func(pool *zfsd.Pool, dst replication.Peer) (replication.Result, error) {
		return replication.Push(ctx, pool, dst, r.GetDotId())
	})
}

// Handoff hands the dot, whose master this pool holds, to the target pool.
func (s *Server) Handoff(ctx context.Context, r *api.PushRequest) (*api.PushReply, error) {
	return s.replicate(ctx, r, func(pool *zfsd.Pool, dst replication.Peer) (replication.Result, error) {
		return replication.Handoff(ctx, pool, dst, r.GetDotId())
	})
}

// replicate runs a push or a handoff from the pool a call is for to the
// pool it names, holding the dot's stream lock on this pool throughout.
func (s *Server) replicate(ctx context.Context, r *api.PushRequest, run func(*zfsd.Pool, replication.Peer) (replication.Result, error)) (*api.PushReply, error) {
	return serve(ctx, s, func(pool *zfsd.Pool) (*api.PushReply, error) {
		if s.peers == nil {
			return nil, status.Error(codes.FailedPrecondition, "this zfsd has no peer identity; it cannot push")
		}
		unlock, err := s.lockDot(pool, r.GetDotId())
		if err != nil {
			return nil, err
		}
		defer unlock()
		c, err := s.peers.Client(r.GetTargetAddress(), r.GetTargetPool())
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		res, err := run(pool, peer{c: c, addr: r.GetTargetAddress()})
		if err != nil {
			return nil, err
		}
		return &api.PushReply{Commit: res.Commit, Base: res.Base, Bytes: res.Bytes, ResumedBytes: res.ResumedBytes, Reseeded: res.Reseeded}, nil
	})
}

// lockDot serialises stream work on one pool's copy of a dot; a second
// one is Aborted. Two pools of one node may each hold a copy, and a
// handoff between them streams from one to the other.
func (s *Server) lockDot(pool *zfsd.Pool, id string) (func(), error) {
	if unlock := s.busy.TryAcquire(pool.Name() + "/" + id); unlock != nil {
		return unlock, nil
	}
	return nil, status.Errorf(codes.Aborted, "dot %s on pool %s: a push, receive or handoff is already in progress", id, pool.Name())
}

// peer is the zfsd a push sends to, at addr.
type peer struct {
	c    *Client
	addr string
}

var _ replication.Peer = peer{}

func (p peer) String() string { return p.addr }

func (p peer) CopyOf(ctx context.Context, id string) (replication.Copy, error) {
	r, err := p.c.c.Snapshots(ctx, &api.DotRef{Id: id})
	if err != nil {
		return replication.Copy{}, errcode.FromStatus(err)
	}
	out := replication.Copy{ResumeToken: r.GetResumeToken()}
	for _, sn := range r.GetSnapshots() {
		out.Snapshots = append(out.Snapshots, zfsd.Snapshot{Name: sn.GetName(), GUID: sn.GetGuid()})
	}
	return out, nil
}

func (p peer) DropCopy(ctx context.Context, id string) error { return p.c.DropCopy(ctx, id) }

// Receive opens a Receive stream to the peer, sends the header and then
// what send writes, and waits for the receiver's verdict.
func (p peer) Receive(ctx context.Context, h replication.Header, send func(io.Writer) (int64, error)) (int64, error) {
	stream, err := p.c.c.Receive(ctx)
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "opening a stream to %s: %v", p.addr, err)
	}
	header := headerToAPI(h)
	if err := stream.Send(&api.ReceiveChunk{Header: header}); err != nil {
		return 0, status.Errorf(codes.Unavailable, "stream to %s: %v", p.addr, err)
	}
	n, sendErr := send(&chunkWriter{stream: stream, dot: h.DotID, start: time.Now(), next: progressEvery})
	if sendErr != nil {
		// The receiver's own account of the break says more than the
		// broken pipe the sender saw.
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return n, fmt.Errorf("stream of dot %s to %s broke after %d bytes: %w (receiver: %v)", h.DotID, p.addr, n, errcode.ToStatus(sendErr), rerr)
		}
		return n, errcode.ToStatus(sendErr)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return n, err
	}
	return n, nil
}

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
