// Package remote serves a node's zfsd over gRPC and gives the controller a
// client that looks like a local pool.
package remote

import (
	"fmt"
	"time"

	"github.com/dotmesh-io/dotmesh-csi/pkg/replication"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func dotToAPI(d zfsd.Dot) *api.Dot {
	return &api.Dot{Pool: d.Pool, Id: d.ID, Name: d.Name, Capacity: d.Capacity, Params: d.Params.Map(), Source: d.Source.String(),
		CreatedUnixNano: unixNano(d.Created), Origin: d.Origin, Block: d.Block, Master: d.Master}
}

// dotFromAPI reads a node's answer. The node parsed what it sends, so a
// parameter or source this side cannot read comes from a newer node: the
// dot keeps what is understood rather than disappearing.
func dotFromAPI(d *api.Dot) zfsd.Dot {
	params, _ := zfsd.ParseParams(d.GetParams())
	src, _ := zfsd.ParseSource(d.GetSource())
	return zfsd.Dot{Pool: d.GetPool(), ID: d.GetId(), Name: d.GetName(), Capacity: d.GetCapacity(), Params: params, Source: src,
		Created: fromUnixNano(d.GetCreatedUnixNano()), Origin: d.GetOrigin(), Block: d.GetBlock(), Master: d.GetMaster()}
}

// specToAPI keeps the parameters a map on the wire. clone_mode and props
// repeat what the map says, for a node that predates the typed parameters.
func specToAPI(s zfsd.DotSpec) *api.DotSpec {
	r := &api.DotSpec{Pool: s.Pool, Id: s.ID, Name: s.Name, Capacity: s.Capacity, Params: s.Params.Map(),
		CloneMode: string(s.Params.Clone()), Props: s.Params.Props(), Block: s.Block}
	switch s.Source.Kind {
	case zfsd.SourceCommit:
		r.FromCommit = s.Source.ID
	case zfsd.SourceDot:
		r.FromDot = s.Source.ID
	}
	return r
}

// specFromAPI parses the parameters map, which carries the clone mode and
// compression too, so clone_mode and props are not read.
func specFromAPI(r *api.DotSpec) (zfsd.DotSpec, error) {
	params, err := zfsd.ParseParams(r.GetParams())
	if err != nil {
		return zfsd.DotSpec{}, fmt.Errorf("dot %s: %w", r.GetId(), err)
	}
	s := zfsd.DotSpec{Pool: r.GetPool(), ID: r.GetId(), Name: r.GetName(), Capacity: r.GetCapacity(), Params: params, Block: r.GetBlock()}
	switch {
	case r.GetFromCommit() != "":
		s.Source = zfsd.Source{Kind: zfsd.SourceCommit, ID: r.GetFromCommit()}
	case r.GetFromDot() != "":
		s.Source = zfsd.Source{Kind: zfsd.SourceDot, ID: r.GetFromDot()}
	}
	return s, nil
}

func commitToAPI(c zfsd.Commit) *api.Commit {
	return &api.Commit{Id: c.ID, DotId: c.DotID, Name: c.Name, Size: c.Size, CreatedUnixNano: unixNano(c.Created)}
}

func commitFromAPI(c *api.Commit) zfsd.Commit {
	return zfsd.Commit{ID: c.GetId(), DotID: c.GetDotId(), Name: c.GetName(), Size: c.GetSize(),
		Created: fromUnixNano(c.GetCreatedUnixNano())}
}

func headerToAPI(h replication.Header) *api.ReceiveHeader {
	return &api.ReceiveHeader{DotId: h.DotID, Base: h.Base, Commit: h.Commit, Resume: h.Resume, Master: h.Master}
}

func headerFromAPI(h *api.ReceiveHeader) replication.Header {
	return replication.Header{DotID: h.GetDotId(), Base: h.GetBase(), Commit: h.GetCommit(), Resume: h.GetResume(), Master: h.GetMaster()}
}
