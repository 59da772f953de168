package cluster

import "errors"

// ErrNotFound is returned for a record the view does not hold.
var ErrNotFound = errors.New("not found in the cluster view")

// ErrConflict is returned when a record changed since it was read (the
// compare-and-swap lost): re-read it and decide again.
var ErrConflict = errors.New("cluster view record changed concurrently")

// ErrExists is returned by a create of a record that is there.
var ErrExists = errors.New("already in the cluster view")

// ErrHeld is returned by a claim of a pool that is imported on another node
// still heard from.
var ErrHeld = errors.New("pool is imported on another node")
