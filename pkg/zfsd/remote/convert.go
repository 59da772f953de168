// Package remote serves a node's zfsd over gRPC and gives the controller a
// client that looks like a local pool.
package remote

import (
	"time"

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
	return &api.Dot{Pool: d.Pool, Id: d.ID, Name: d.Name, Capacity: d.Capacity, Params: d.Params, Source: d.Source,
		CreatedUnixNano: unixNano(d.Created), Origin: d.Origin, Block: d.Block, Master: d.Master}
}

func dotFromAPI(d *api.Dot) zfsd.Dot {
	p := d.GetParams()
	if p == nil {
		p = map[string]string{}
	}
	return zfsd.Dot{Pool: d.GetPool(), ID: d.GetId(), Name: d.GetName(), Capacity: d.GetCapacity(), Params: p, Source: d.GetSource(),
		Created: fromUnixNano(d.GetCreatedUnixNano()), Origin: d.GetOrigin(), Block: d.GetBlock(), Master: d.GetMaster()}
}

func commitToAPI(c zfsd.Commit) *api.Commit {
	return &api.Commit{Id: c.ID, DotId: c.DotID, Name: c.Name, Size: c.Size, CreatedUnixNano: unixNano(c.Created)}
}

func commitFromAPI(c *api.Commit) zfsd.Commit {
	return zfsd.Commit{ID: c.GetId(), DotID: c.GetDotId(), Name: c.GetName(), Size: c.GetSize(),
		Created: fromUnixNano(c.GetCreatedUnixNano())}
}
