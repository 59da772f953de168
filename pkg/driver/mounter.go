package driver

import "github.com/dotmesh-io/dotmesh-csi/pkg/mountinfo"

// Mounter is the node service's hold on this node's mount table: reading
// it, binding volumes into it and taking them out. The node service decides
// which mounts are the named volume's; the Mounter only does what it is
// told. It is an interface so those decisions can be tested against a fake
// table, without root; HostMounter is the real one.
type Mounter interface {
	// Mounts lists this process's mount table.
	Mounts() ([]mountinfo.Mount, error)
	// StackAt lists the mounts stacked exactly at path, bottom first.
	StackAt(path string) ([]mountinfo.Mount, error)
	// CheckAlive wraps mountinfo.ErrDeadMount when the filesystem mounted
	// at path no longer answers.
	CheckAlive(path string) error
	// DetachDead lets go of dead mounts on top at path while ours says
	// they are the caller's, and returns the mount then on top, if any.
	DetachDead(path string, ours func(mountinfo.Mount) bool) (mountinfo.Mount, bool, error)
	// Bind and BindFile bind src at dst (a folder, a file), idempotently;
	// dst holding something else wraps mountinfo.ErrMountedElsewhere.
	Bind(src, dst string, readOnly bool) error
	BindFile(src, dst string, readOnly bool) error
	// UnmountOnly unmounts everything stacked at path when ours holds for
	// each, and otherwise nothing, returning a *mountinfo.ForeignMountError.
	UnmountOnly(path string, ours func(mountinfo.Mount) bool) error
}

// HostMounter is the Mounter of this process's mount namespace, through
// pkg/mountinfo.
type HostMounter struct{}

var _ Mounter = HostMounter{}

func (HostMounter) Mounts() ([]mountinfo.Mount, error) {
	return mountinfo.ReadFile("/proc/self/mountinfo")
}

func (HostMounter) StackAt(path string) ([]mountinfo.Mount, error) { return mountinfo.StackAt(path) }

func (HostMounter) CheckAlive(path string) error { return mountinfo.CheckAlive(path) }

func (HostMounter) DetachDead(path string, ours func(mountinfo.Mount) bool) (mountinfo.Mount, bool, error) {
	return mountinfo.DetachDead(path, ours)
}

func (HostMounter) Bind(src, dst string, readOnly bool) error {
	return mountinfo.Bind(src, dst, readOnly)
}

func (HostMounter) BindFile(src, dst string, readOnly bool) error {
	return mountinfo.BindFile(src, dst, readOnly)
}

func (HostMounter) UnmountOnly(path string, ours func(mountinfo.Mount) bool) error {
	return mountinfo.UnmountOnly(path, ours)
}
