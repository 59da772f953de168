// Package operator keeps PV-per-node mode's backing PVCs and pool pods: one
// backing PVC (a ZFS pool in a file on a cloud disk) and one pool pod per
// selected node, a hybrid of a StatefulSet and a DaemonSet.
//
// The pool pod mounts its PVC and so holds the disk on its node; the node
// plugin finds the pool pods on its node and imports their pools. The
// constants below are that contract, and the node plugin reads the same ones.
//
// Plan is pure: it turns what the cluster holds into actions. The runtime
// (Run) elects a leader, observes the cluster, plans and applies.
package operator

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// The configuration ConfigMap and its keys.
const (
	DefaultConfigMap = "dotmesh-config"

	KeyMode                = "mode"
	KeyBackingStorageClass = "backingStorageClass"
	KeyBackingSize         = "backingSize"
	KeyNodeSelector        = "nodeSelector"
	KeyOrphanGrace         = "orphanGrace"
	KeyMaxAutoPVCs         = "maxAutoPVCs"
)

// Labels and annotations on backing PVCs and pool pods.
const (
	LabelPartOf = "app.kubernetes.io/part-of"
	PartOf      = "dotmesh"

	LabelRole   = "dotmesh.io/role"
	RoleBacking = "backing"
	RolePool    = "pool"

	// LabelAuto marks a backing PVC the operator created on its own, as
	// opposed to one an administrator made; only these count towards
	// maxAutoPVCs.
	LabelAuto = "dotmesh.io/auto"

	// LabelPool on a pool pod names its backing PVC, which is also the
	// pool's name.
	LabelPool = "dotmesh.io/pool"

	// AnnotationNode on a backing PVC names the node it is assigned to; on a
	// pool pod, the node it was made for (spec.nodeName is empty until the
	// pod is scheduled).
	AnnotationNode = "dotmesh.io/node"

	// AnnotationOrphanedAt on a backing PVC is the RFC 3339 time its node
	// was found gone; absent while the PVC is not orphaned.
	AnnotationOrphanedAt = "dotmesh.io/orphaned-at"
)

// Names of the operator's own objects and of what it puts in pool pods.
const (
	// PVCNamePrefix is followed by 6 lowercase hex characters.
	PVCNamePrefix = "dotmesh-pool-"

	LeaseName = "dotmesh-operator"

	PoolContainer = "pool"
	PoolMountPath = "/pool"

	DefaultPoolImage = "ghcr.io/dotmesh-io/dotmesh-csi:dev"

	// ReasonCapReached is the Event reason when a node gets no backing PVC
	// because the operator has created maxAutoPVCs already.
	ReasonCapReached = "BackingPVCCapReached"
	// ReasonInvalidConfig is the Event reason on the ConfigMap when it
	// cannot be used.
	ReasonInvalidConfig = "InvalidConfig"
)

// PoolCommand is what a pool pod runs: it holds the mount until told to go.
func PoolCommand() []string {
	return []string{"/dotmesh-node", "hold-pool", "--dir=" + PoolMountPath}
}

// BackingSelector selects backing PVCs.
func BackingSelector() string {
	return LabelPartOf + "=" + PartOf + "," + LabelRole + "=" + RoleBacking
}

// PoolPodSelector selects pool pods.
func PoolPodSelector() string {
	return LabelPartOf + "=" + PartOf + "," + LabelRole + "=" + RolePool
}

// maxPodName keeps pool pod names usable as hostnames (63 characters), not
// only as object names (253).
const maxPodName = 63

// PoolPodName is "<pvc>-<node>". A longer one keeps a prefix and ends in a
// hash of the whole, so two long node names sharing a prefix still give two
// names. The name is for people; the operator finds pods by label.
func PoolPodName(pvc, node string) string {
	full := pvc + "-" + node
	if len(full) <= maxPodName {
		return full
	}
	h := fnv.New32a()
	h.Write([]byte(full))
	suffix := fmt.Sprintf("-%08x", h.Sum32())
	prefix := strings.TrimRight(full[:maxPodName-len(suffix)], "-.")
	return prefix + suffix
}
