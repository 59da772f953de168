package zfsd

import (
	"context"
	"strconv"

	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// On a full pool, zfs-fuse refuses every property write ("out of space"),
// and freeing space through CSI needs some: a deferred deletion records
// itself in a property before it destroys, and unstaging gives the dot its
// own mountpoint back. So each pool keeps an empty dataset holding a
// reservation, which users' data cannot take. A write that fails for want
// of space releases it (reservation=none works on a full pool) and tries
// again; the reserve is armed again once the pool has room.
//
// Measured on zfs-fuse 0.7 (docs/limitations.md): with the pool filled to
// the last byte, 256 KiB released let no property write through, 768 KiB
// let three rounds of three writes through out of five, and 1 MiB all five,
// on a 128 MiB and a 1 GiB pool alike. The reserve is four times that.
// OpenZFS keeps its own slop space for such writes, so there the reserve
// is only a margin.
const (
	reserveName  = "reserve"
	reserveBytes = 4 << 20
)

func (p *Pool) reserveDataset() string { return p.cfg.Name + "/" + reserveName }

// armReserve makes the reserve hold its space, creating it if needed. A
// pool too full to arm it serves without, and the next write tries again.
func (p *Pool) armReserve(ctx context.Context) {
	if p.reserveArmed.Load() {
		return
	}
	size := strconv.Itoa(reserveBytes)
	err := p.z.Set(ctx, p.reserveDataset(), "reservation", size)
	if zfs.IsKind(err, zfs.KindNotFound) {
		err = p.z.Create(ctx, p.reserveDataset(), []zfs.Prop{{Name: "canmount", Value: "off"}, {Name: "reservation", Value: size}})
	}
	if err != nil {
		klog.V(2).InfoS("delete reserve not armed; retrying on the next write", "pool", p.cfg.Name, "err", err)
		return
	}
	p.reserveArmed.Store(true)
	klog.V(2).InfoS("delete reserve armed", "pool", p.cfg.Name, "bytes", reserveBytes)
}

// freeing runs a write that a deletion or an unstage needs. When the pool
// is too full for it, the reserve is released and the write tried again.
func (p *Pool) freeing(ctx context.Context, write func() error) error {
	err := write()
	if !zfs.IsKind(err, zfs.KindOutOfSpace) {
		return err
	}
	if rerr := p.z.Set(ctx, p.reserveDataset(), "reservation", "none"); rerr != nil {
		klog.ErrorS(rerr, "releasing the delete reserve", "pool", p.cfg.Name)
		return err
	}
	p.reserveArmed.Store(false)
	klog.InfoS("pool full: released the delete reserve so a deletion can proceed", "pool", p.cfg.Name, "bytes", reserveBytes)
	return write()
}
