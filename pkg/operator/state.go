package operator

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// State is what Plan sees of the cluster: every node, and the backing PVCs
// and pool pods in the operator's namespace.
type State struct {
	Nodes []Node
	PVCs  []BackingPVC
	Pods  []PoolPod
}

// Node is a cluster node.
type Node struct {
	Name   string
	Labels map[string]string
}

// BackingPVC is a PVC that holds one pool.
type BackingPVC struct {
	Name string
	// Node is the node the PVC is assigned to; "" when it has none (a PVC an
	// administrator made for the operator to place).
	Node string
	// OrphanedAt is when the operator found Node gone; zero when it has not.
	OrphanedAt time.Time
	// BadStamp is true when the orphaned-at annotation is there but is no
	// time; Plan rewrites or removes it.
	BadStamp bool
	// Auto is true for PVCs the operator created on its own.
	Auto bool
	// Deleting is true once someone has deleted the PVC; its pool is going,
	// so Plan treats it as gone.
	Deleting bool
	// ResourceVersion is not read by Plan; Apply makes its changes to the
	// PVC conditional on it.
	ResourceVersion string
	// Volume is the PV bound to the PVC ("" while unbound); not read by Plan.
	Volume string
}

// PoolPod is a pod holding a backing PVC on a node.
type PoolPod struct {
	Name string
	// Pool is the name of the backing PVC.
	Pool string
	// Node is where the pod runs, or is meant to run before it is scheduled.
	Node        string
	Running     bool
	Terminating bool
	// Finished is true when the pod has stopped for good (Succeeded or
	// Failed, e.g. evicted); it has to be deleted to be made again.
	Finished bool
	// UID is not read by Plan; Apply deletes this pod and no later one of
	// the same name.
	UID types.UID
}

// ActionKind says what an Action does.
type ActionKind string

const (
	// CreatePVC creates backing PVC PVC assigned to Node.
	CreatePVC ActionKind = "CreatePVC"
	// AssignPVC reassigns PVC from From to Node and clears its orphaned-at.
	AssignPVC ActionKind = "AssignPVC"
	// StampOrphaned sets PVC's orphaned-at to At.
	StampOrphaned ActionKind = "StampOrphaned"
	// ClearOrphaned removes PVC's orphaned-at.
	ClearOrphaned ActionKind = "ClearOrphaned"
	// CreatePod creates the pool pod of PVC on Node.
	CreatePod ActionKind = "CreatePod"
	// DeletePod deletes pool pod Pod (of pool PVC, on Node).
	DeletePod ActionKind = "DeletePod"
	// Warn records a Warning Event with Reason about Node; Why is its message.
	Warn ActionKind = "Warn"
)

// Action is one change Plan asks for.
type Action struct {
	Kind ActionKind
	PVC  string
	Pod  string
	Node string
	From string
	At   time.Time
	// Why is the log message (or, for Warn, the Event message), in words an
	// operator reading the log would use.
	Why    string
	Reason string
}
