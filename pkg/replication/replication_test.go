package replication

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// The fakes move snapshots as ZFS does, and refuse what ZFS refuses: a
// stream is the snapshots it carries, one "name guid" line each, an
// incremental one starting with its base; a receiver takes an incremental
// stream only onto its newest snapshot, and a full one only where it holds
// none. So a push that picks the wrong base or skips a drop fails here.

const dot = "d1"

// snaps builds a snapshot list from "name:guid" pairs.
func snaps(pairs ...string) []zfsd.Snapshot {
	var out []zfsd.Snapshot
	for _, p := range pairs {
		name, guid, _ := strings.Cut(p, ":")
		out = append(out, zfsd.Snapshot{Name: name, GUID: guid})
	}
	return out
}

// fakeSource is the sending pool.
type fakeSource struct {
	snaps  []zfsd.Snapshot
	staged bool
	master bool
	log    *[]string // calls, in order, shared with the peer
	made   int
}

func (s *fakeSource) Name() string { return "src" }

func (s *fakeSource) record(call string) {
	if s.log != nil {
		*s.log = append(*s.log, call)
	}
}

func (s *fakeSource) Snapshots(context.Context, string) ([]zfsd.Snapshot, error) {
	return append([]zfsd.Snapshot(nil), s.snaps...), nil
}

// stream writes the snapshots from base (or the first) up to commit.
func (s *fakeSource) stream(base, commit string, w io.Writer) (int64, error) {
	from, to := 0, -1
	for i, sn := range s.snaps {
		if sn.Name == base {
			from = i
		}
		if sn.Name == commit {
			to = i
		}
	}
	if to < 0 || (base != "" && s.snaps[from].Name != base) {
		return 0, fmt.Errorf("source has no %q..%q", base, commit)
	}
	var n int64
	for _, sn := range s.snaps[from : to+1] {
		k, err := fmt.Fprintf(w, "%s %s\n", sn.Name, sn.GUID)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (s *fakeSource) Send(_ context.Context, _, base, commit string, w io.Writer) (int64, error) {
	s.record("send " + base + ".." + commit)
	return s.stream(base, commit, w)
}

// A token is "base..commit", the stream it interrupted.
func (s *fakeSource) ResumeInfo(_ context.Context, id, token string) (zfs.ResumeInfo, error) {
	base, commit, _ := strings.Cut(token, "..")
	if _, err := s.stream(base, commit, io.Discard); err != nil {
		return zfs.ResumeInfo{}, err
	}
	return zfs.ResumeInfo{ToName: "tank/dots/" + id + "@" + commit, Bytes: 1}, nil
}

func (s *fakeSource) SendResume(_ context.Context, _, token string, w io.Writer) (int64, error) {
	s.record("resume " + token)
	base, commit, _ := strings.Cut(token, "..")
	return s.stream(base, commit, w)
}

func (s *fakeSource) Staged(context.Context, string) (bool, error) {
	s.record("staged")
	return s.staged, nil
}

func (s *fakeSource) UnmountDot(context.Context, string) error {
	s.record("unmount")
	return nil
}

func (s *fakeSource) CreateCommit(_ context.Context, id, _ string) (zfsd.Commit, error) {
	s.record("commit")
	s.made++
	name := fmt.Sprintf("h%d", s.made)
	s.snaps = append(s.snaps, zfsd.Snapshot{Name: name, GUID: "g" + name})
	return zfsd.Commit{ID: id + "@" + name, DotID: id}, nil
}

func (s *fakeSource) SetRole(_ context.Context, _ string, master bool) error {
	s.record(fmt.Sprintf("role master=%v", master))
	s.master = master
	return nil
}

// fakePeer is the receiving pool.
type fakePeer struct {
	snaps   []zfsd.Snapshot
	partial string // the token an interrupted stream left, "" for none
	master  bool

	breakNext bool // the next stream breaks after it is read, leaving a partial
	got       []Header
	bytes     int64
	drops     int
	log       *[]string
}

func (p *fakePeer) String() string { return "peer" }

func (p *fakePeer) record(call string) {
	if p.log != nil {
		*p.log = append(*p.log, call)
	}
}

func (p *fakePeer) CopyOf(context.Context, string) (Copy, error) {
	p.record("list")
	return Copy{Snapshots: append([]zfsd.Snapshot(nil), p.snaps...), ResumeToken: p.partial}, nil
}

func (p *fakePeer) DropCopy(context.Context, string) error {
	p.record("drop")
	p.drops++
	p.snaps, p.partial = nil, ""
	return nil
}

func (p *fakePeer) Receive(_ context.Context, h Header, send func(io.Writer) (int64, error)) (int64, error) {
	p.record("receive")
	p.got = append(p.got, h)
	var buf strings.Builder
	n, err := send(&buf)
	p.bytes += n
	if err != nil {
		return n, fmt.Errorf("sender: %w", err)
	}
	base := h.Base
	if h.Resume {
		if p.partial == "" || !strings.HasSuffix(p.partial, ".."+h.Commit) {
			return n, fmt.Errorf("resuming %q: the peer holds the partial stream %q", h.Commit, p.partial)
		}
		base, _, _ = strings.Cut(p.partial, "..")
	} else {
		p.partial = "" // a fresh receive discards it first
	}
	if p.breakNext {
		p.breakNext = false
		p.partial = base + ".." + h.Commit
		return n, errors.New("stream broke")
	}
	var in []zfsd.Snapshot
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		name, guid, _ := strings.Cut(sc.Text(), " ")
		in = append(in, zfsd.Snapshot{Name: name, GUID: guid})
	}
	if len(in) == 0 || in[len(in)-1].Name != h.Commit {
		return n, fmt.Errorf("stream ends at %v, header says %s", in, h.Commit)
	}
	switch {
	case base == "" && len(p.snaps) > 0:
		return n, errors.New("full stream refused: destination has snapshots")
	case base != "" && (len(p.snaps) == 0 || p.snaps[len(p.snaps)-1] != in[0] || in[0].Name != base):
		return n, fmt.Errorf("incremental from %s refused: the copy's newest is %v", base, p.snaps)
	case base != "":
		in = in[1:]
	}
	p.snaps = append(p.snaps, in...)
	p.partial = ""
	p.master = h.Master
	return n, nil
}

func TestPush(t *testing.T) {
	src := snaps("a:1", "b:2", "c:3")
	for _, tc := range []struct {
		name     string
		peer     []zfsd.Snapshot
		partial  string
		want     []Header
		reseeded bool
		resumed  bool
		base     string
	}{
		{name: "empty copy gets everything", want: []Header{{Commit: "c"}}},
		{name: "copy behind gets the increment", peer: snaps("a:1", "b:2"), want: []Header{{Base: "b", Commit: "c"}}, base: "b"},
		{name: "copy up to date gets nothing", peer: snaps("a:1", "b:2", "c:3")},
		{name: "copy past the common commit is re-seeded", peer: snaps("a:1", "b:2", "x:9"),
			want: []Header{{Commit: "c"}}, reseeded: true},
		{name: "same name, other GUID is diverged", peer: snaps("a:1", "b:7"), want: []Header{{Commit: "c"}}, reseeded: true},
		{name: "nothing in common is diverged", peer: snaps("z:5"), want: []Header{{Commit: "c"}}, reseeded: true},
		{name: "interrupted stream is resumed, then the rest sent", peer: snaps("a:1"), partial: "a..b",
			want: []Header{{Commit: "b", Resume: true}, {Base: "b", Commit: "c"}}, resumed: true, base: "b"},
		{name: "interrupted stream to the newest is all there is to send", peer: snaps("a:1"), partial: "a..c",
			want: []Header{{Commit: "c", Resume: true}}, resumed: true},
		{name: "broken first stream is resumed", partial: "..b",
			want: []Header{{Commit: "b", Resume: true}, {Base: "b", Commit: "c"}}, resumed: true, base: "b"},
		{name: "token the source cannot serve: sent afresh", peer: snaps("a:1"), partial: "a..q",
			want: []Header{{Base: "a", Commit: "c"}}, base: "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &fakeSource{snaps: src}
			p := &fakePeer{snaps: tc.peer, partial: tc.partial}
			r, err := Push(context.Background(), s, p, dot)
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			if !reflect.DeepEqual(p.snaps, src) {
				t.Errorf("peer holds %v, want %v", p.snaps, src)
			}
			if p.partial != "" {
				t.Errorf("peer still holds a partial stream %q", p.partial)
			}
			for i := range tc.want {
				tc.want[i].DotID = dot
			}
			if !reflect.DeepEqual(p.got, tc.want) {
				t.Errorf("streams %+v, want %+v", p.got, tc.want)
			}
			if r.Commit != "c" || r.Base != tc.base || r.Reseeded != tc.reseeded || r.Bytes != p.bytes {
				t.Errorf("result %+v; want commit c, base %q, reseeded %v, bytes %d", r, tc.base, tc.reseeded, p.bytes)
			}
			if tc.reseeded != (p.drops == 1) || p.drops > 1 {
				t.Errorf("copy dropped %d times, re-seed %v", p.drops, tc.reseeded)
			}
			if tc.resumed != (r.ResumedBytes > 0) || r.ResumedBytes > r.Bytes {
				t.Errorf("resumed %d of %d bytes; want a resume: %v", r.ResumedBytes, r.Bytes, tc.resumed)
			}
			if p.master {
				t.Error("a push made the peer's copy the master")
			}
		})
	}
}

// A stream that breaks fails the push and leaves a partial state; the next
// push finishes that stream rather than starting over.
func TestPushResumesWhatBroke(t *testing.T) {
	ctx := context.Background()
	s := &fakeSource{snaps: snaps("a:1", "b:2")}
	p := &fakePeer{snaps: snaps("a:1"), breakNext: true}
	if _, err := Push(ctx, s, p, dot); err == nil {
		t.Fatal("push over a broken stream succeeded")
	}
	if p.partial != "a..b" {
		t.Fatalf("peer holds partial %q after the break, want a..b", p.partial)
	}
	s.snaps = append(s.snaps, snaps("c:3")...)
	r, err := Push(ctx, s, p, dot)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !reflect.DeepEqual(p.snaps, s.snaps) || r.ResumedBytes == 0 || r.Base != "b" {
		t.Fatalf("after the retry the peer holds %v (result %+v), want %v resumed then sent from b", p.snaps, r, s.snaps)
	}
}

func TestPushFails(t *testing.T) {
	ctx := context.Background()
	t.Run("no commit to push", func(t *testing.T) {
		var log []string
		p := &fakePeer{log: &log}
		_, err := Push(ctx, &fakeSource{}, p, dot)
		if !errors.Is(err, zfsd.ErrBusy) {
			t.Fatalf("push of a dot with no commit: %v, want ErrBusy (FailedPrecondition)", err)
		}
		if len(log) != 0 {
			t.Fatalf("the peer was asked %v", log)
		}
	})
	t.Run("peer refuses the stream", func(t *testing.T) {
		// A copy holding a commit the listing did not show: the receiver's
		// refusal is the push's error.
		s := &fakeSource{snaps: snaps("a:1", "b:2")}
		p := &stalePeer{fakePeer{snaps: snaps("a:1", "x:9")}, snaps("a:1")}
		if _, err := Push(ctx, s, p, dot); err == nil || !strings.Contains(err.Error(), "incremental from a refused") {
			t.Fatalf("push into a copy that moved on: %v, want the receiver's refusal", err)
		}
	})
}

// stalePeer lists an older state than it holds.
type stalePeer struct {
	fakePeer
	listed []zfsd.Snapshot
}

func (p *stalePeer) CopyOf(context.Context, string) (Copy, error) {
	return Copy{Snapshots: p.listed}, nil
}

func TestHandoff(t *testing.T) {
	ctx := context.Background()
	t.Run("order", func(t *testing.T) {
		var log []string
		s := &fakeSource{snaps: snaps("a:1", "b:2"), master: true, log: &log}
		p := &fakePeer{snaps: snaps("a:1"), log: &log}
		r, err := Handoff(ctx, s, p, dot)
		if err != nil {
			t.Fatalf("handoff: %v", err)
		}
		want := []string{"staged", "unmount", "commit", "list", "receive", "send a..h1", "role master=false"}
		if !reflect.DeepEqual(log, want) {
			t.Fatalf("calls %v, want %v", log, want)
		}
		if !reflect.DeepEqual(p.snaps, s.snaps) || r.Commit != "h1" || r.Base != "a" {
			t.Fatalf("peer holds %v (result %+v), want %v up to the handoff commit h1", p.snaps, r, s.snaps)
		}
		if !p.master || s.master {
			t.Fatalf("peer master %v, source master %v; want the peer's copy the master", p.master, s.master)
		}
	})
	t.Run("resumed stream arrives as the master", func(t *testing.T) {
		s := &fakeSource{snaps: snaps("a:1", "b:2"), master: true}
		p := &fakePeer{snaps: snaps("a:1"), partial: "a..b"}
		if _, err := Handoff(ctx, s, p, dot); err != nil {
			t.Fatalf("handoff: %v", err)
		}
		if len(p.got) != 2 || !p.got[0].Resume || !p.got[0].Master || !p.got[1].Master {
			t.Fatalf("streams %+v, want a resumed one then the rest, both as master", p.got)
		}
	})
	t.Run("staged", func(t *testing.T) {
		var log []string
		s := &fakeSource{snaps: snaps("a:1"), staged: true, master: true, log: &log}
		_, err := Handoff(ctx, s, &fakePeer{log: &log}, dot)
		if !errors.Is(err, zfsd.ErrBusy) {
			t.Fatalf("handoff of a staged dot: %v, want ErrBusy (FailedPrecondition)", err)
		}
		if !reflect.DeepEqual(log, []string{"staged"}) || len(s.snaps) != 1 || !s.master {
			t.Fatalf("calls %v, source %v master %v; want nothing done past the check", log, s.snaps, s.master)
		}
	})
	t.Run("push fails", func(t *testing.T) {
		s := &fakeSource{snaps: snaps("a:1"), master: true}
		p := &fakePeer{snaps: snaps("a:1"), breakNext: true}
		if _, err := Handoff(ctx, s, p, dot); err == nil {
			t.Fatal("handoff over a broken stream succeeded")
		}
		if !s.master || p.master {
			t.Fatalf("source master %v, peer master %v; a failed handoff keeps the master where it was", s.master, p.master)
		}
	})
}
