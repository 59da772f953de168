package driver

import (
	"context"
	"sort"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// pools lists the pools that can take work now.
func (d *Driver) pools(ctx context.Context) ([]zfsd.PoolInfo, error) {
	pools, err := d.store.Pools(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if len(pools) == 0 {
		return nil, statusf(codes.Unavailable, "no pool is available")
	}
	return pools, nil
}

func anyZvols(pools []zfsd.PoolInfo) bool {
	for _, p := range pools {
		if p.Zvols {
			return true
		}
	}
	return false
}

func poolNamed(pools []zfsd.PoolInfo, name string) (zfsd.PoolInfo, bool) {
	for _, p := range pools {
		if p.Name == name {
			return p, true
		}
	}
	return zfsd.PoolInfo{}, false
}

func nodeOf(pools []zfsd.PoolInfo, pool string) string {
	p, _ := poolNamed(pools, pool)
	return p.Node
}

// place picks the pool for a new dot of size bytes. Requisite topology
// bounds the choice; the preferred topology (WaitForFirstConsumer puts the
// pod's node first) orders it; without either, the pool with most free
// space wins. near, when set, is the pool of the branch's source, preferred
// over any other that is allowed, because an instant clone needs it.
func place(pools []zfsd.PoolInfo, tr *csi.TopologyRequirement, size int64, near string) (zfsd.PoolInfo, error) {
	allowed := pools
	if req := tr.GetRequisite(); len(req) > 0 {
		allowed = nil
		for _, p := range pools {
			if inTopology(p, req) {
				allowed = append(allowed, p)
			}
		}
		if len(allowed) == 0 {
			return zfsd.PoolInfo{}, statusf(codes.ResourceExhausted, "no pool in the requisite topology %v", req)
		}
	}
	var biggest int64
	var fit []zfsd.PoolInfo
	for _, p := range allowed {
		biggest = max(biggest, p.Size)
		if p.Available >= size {
			fit = append(fit, p)
		}
	}
	if len(fit) == 0 {
		if size > biggest {
			return zfsd.PoolInfo{}, statusf(codes.OutOfRange, "%d bytes is more than any allowed pool can ever hold (largest %d bytes)", size, biggest)
		}
		return zfsd.PoolInfo{}, statusf(codes.ResourceExhausted, "no allowed pool has %d bytes free", size)
	}
	sort.SliceStable(fit, func(i, j int) bool { return fit[i].Available > fit[j].Available })
	if p, ok := poolNamed(fit, near); ok {
		return p, nil
	}
	for _, pref := range tr.GetPreferred() {
		for _, p := range fit {
			if inTopology(p, []*csi.Topology{pref}) {
				return p, nil
			}
		}
	}
	return fit[0], nil
}

func inTopology(p zfsd.PoolInfo, ts []*csi.Topology) bool {
	for _, t := range ts {
		if n, ok := t.GetSegments()[TopologyKey]; !ok || n == p.Node {
			return true
		}
	}
	return false
}

func nodeCount(pools []zfsd.PoolInfo) int {
	nodes := map[string]bool{}
	for _, p := range pools {
		nodes[p.Node] = true
	}
	return len(nodes)
}
