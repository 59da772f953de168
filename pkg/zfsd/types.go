// Package zfsd is the node daemon's pool and dot logic: it owns the pools
// imported on its node and does all ZFS work there. The pool itself is the
// source of truth: every dot and commit carries its metadata in io.dotmesh:*
// user properties, and the in-memory index is rebuilt from them on open.
package zfsd

import (
	"errors"
	"time"
)

// Errors the driver maps to gRPC codes. zfs-level failures come through as
// *zfs.Error and are mapped by kind.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrInvalid       = errors.New("invalid")
	ErrUnsupported   = errors.New("unsupported by this ZFS")
	ErrBusy          = errors.New("busy")
	// ErrTooSmall: the requested capacity cannot hold the source's data.
	ErrTooSmall = errors.New("capacity too small for the source's data")
	// ErrUnavailable: the pool cannot be reached now (its ZFS does not
	// answer, or it is not imported); the pool's monitor brings it back.
	ErrUnavailable = errors.New("pool unavailable")
)

// CloneMode says how a branch is made.
type CloneMode string

const (
	// CloneInstant is `zfs clone`: instant, but the origin commit (and so the
	// origin dot) lives until the branch is gone.
	CloneInstant CloneMode = "clone"
	// CloneDetached is `zfs send | zfs recv`: a full copy with no dependency.
	CloneDetached CloneMode = "detached"
)

// Dot is one persistent volume: <pool>/dots/<id>.
type Dot struct {
	Pool     string // the pool this copy is on
	ID       string
	Name     string // the CSI volume name, unique on the pool
	Capacity int64  // bytes; enforced by refquota
	Params   Params
	Source   Source
	Created  time.Time
	Deleted  bool   // hidden: deleted by the user, kept while others depend on it
	Origin   string // ZFS origin snapshot of an instant branch, "" otherwise
	Block    bool   // a zvol (raw block volume), not a filesystem
	Master   bool   // this pool's copy was last the dot's master

	legacyMount bool // its mountpoint is "legacy": mounted with mount -t zfs
}

// Commit is a snapshot of a dot: <pool>/dots/<dot-id>@<commit-id>.
type Commit struct {
	ID       string // <dot-id>@<commit-id>, also the CSI snapshot ID
	DotID    string
	Name     string // the CSI snapshot name; "" for internal commits
	Size     int64  // the dot's capacity when committed: the restore size
	Used     int64  // referenced bytes
	Created  time.Time
	Deleted  bool // hidden, destroyed when its last branch goes
	Internal bool // made by the driver to branch a dot from a dot
}

// DotSpec asks for a new dot.
type DotSpec struct {
	Pool     string // where to make it; a single pool checks it is the one asked for
	ID       string
	Name     string
	Capacity int64
	// Params were checked by the driver; the pool sets their Props and
	// branches by their clone mode.
	Params Params
	// Source is the commit or dot to branch from (a dot through an
	// internal commit); none makes an empty dot.
	Source Source
	// Block makes a zvol of Capacity bytes (a multiple of 1 MiB) instead of
	// a filesystem.
	Block bool
}

// Property names. Keeping them together documents the on-pool format.
const (
	propManaged  = "io.dotmesh:managed"
	propID       = "io.dotmesh:id"
	propName     = "io.dotmesh:name"
	propCapacity = "io.dotmesh:capacity"
	propParams   = "io.dotmesh:params"
	propSource   = "io.dotmesh:source"
	propCreated  = "io.dotmesh:created"
	propDeleted  = "io.dotmesh:deleted"
	// propRole says whether this pool's copy of a dot is its master or a
	// replica, so a lost cluster view can be rebuilt. It is only trusted
	// when set here (source local): a stream carries the sender's.
	propRole = "io.dotmesh:role"

	propCommitName     = "io.dotmesh:commit-name"
	propCommitSize     = "io.dotmesh:commit-size"
	propCommitCreated  = "io.dotmesh:commit-created"
	propCommitDeleted  = "io.dotmesh:commit-deleted"
	propCommitInternal = "io.dotmesh:commit-internal"
)

// dotProps are a dot's own metadata (not the marker or ID).
var dotProps = []string{propName, propCapacity, propParams, propSource, propCreated, propDeleted}

var loadProps = []string{
	"type", "origin", "mountpoint", propRole,
	propManaged, propID, propName, propCapacity, propParams, propSource, propCreated, propDeleted,
	propCommitName, propCommitSize, propCommitCreated, propCommitDeleted, propCommitInternal,
}

// visible reports whether CSI sees a commit: not hidden, and made for a CSI
// snapshot (internal and handoff commits have no name).
func (c *Commit) visible() bool { return !c.Deleted && !c.Internal && c.Name != "" }
