package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Dot is a dot (a volume with commits): which pool is its master and how
// far each replica has got. The spec is what was asked for; the status is
// where the dot is, written by the controller and the node plugins with a
// compare-and-swap on the resourceVersion.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name=Volume,type=string,JSONPath=`.spec.name`
// +kubebuilder:printcolumn:name=Master,type=string,JSONPath=`.status.master`
// +kubebuilder:printcolumn:name=Node,type=string,JSONPath=`.status.masterNode`
// +kubebuilder:printcolumn:name=Replicas,type=string,JSONPath=`.status.replicas[*].pool`
// +kubebuilder:printcolumn:name=Capacity,type=integer,JSONPath=`.spec.capacity`
// +kubebuilder:printcolumn:name=Commits,type=integer,JSONPath=`.status.seq`
// +kubebuilder:printcolumn:name=Moving,type=string,JSONPath=`.status.moving`,priority=1
// +kubebuilder:printcolumn:name=Deleted,type=boolean,JSONPath=`.status.deleted`,priority=1
// +kubebuilder:printcolumn:name=Age,type=date,JSONPath=`.metadata.creationTimestamp`
type Dot struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DotSpec   `json:"spec"`
	Status DotStatus `json:"status,omitempty"`
}

// DotSpec is the dot as it was asked for.
type DotSpec struct {
	// Name is the CSI volume name.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Capacity is in bytes.
	// +kubebuilder:validation:Minimum=0
	Capacity int64 `json:"capacity"`
	// CommitInterval has the controller commit the dot this often (the
	// StorageClass parameter commitInterval), bounding what a failover can
	// lose; a Go duration such as 30s or 5m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	CommitInterval *metav1.Duration `json:"commitInterval,omitempty"`
}

// DotStatus is where the dot is.
type DotStatus struct {
	// Master is the pool that may write the dot; empty on a deleted dot
	// whose master copy is gone.
	// +optional
	Master string `json:"master,omitempty"`
	// MasterNode is the node serving the master pool, for display only.
	// +optional
	MasterNode string `json:"masterNode,omitempty"`
	// NewestCommit is the master's newest commit.
	// +optional
	NewestCommit string `json:"newestCommit,omitempty"`
	// Seq is how many commits the master has taken; a replica lags by
	// Seq minus its own.
	// +kubebuilder:validation:Minimum=0
	Seq int64 `json:"seq"`
	// LastCommitAt is when the newest commit was taken.
	// +optional
	LastCommitAt *Timestamp `json:"lastCommitAt,omitempty"`
	// Replicas are every copy other than the master's.
	// +listType=map
	// +listMapKey=pool
	// +optional
	Replicas []Replica `json:"replicas,omitempty"`
	// Loss is what the last failover could not carry over.
	// +optional
	Loss *Loss `json:"loss,omitempty"`
	// Moving names the pool a handoff in progress is bringing the dot to:
	// the claim that lets one node at a time move the dot.
	// +optional
	Moving string `json:"moving,omitempty"`
	// MovingSince is when that handoff claimed the dot.
	// +optional
	MovingSince *Timestamp `json:"movingSince,omitempty"`
	// Deleted marks a dot deleted while copies remain on pools that could
	// not be reached; the record stays, so no rebuild brings the dot back,
	// until those copies are dropped.
	// +optional
	Deleted bool `json:"deleted,omitempty"`
}

// Replica is how far one copy of a dot has got.
type Replica struct {
	// Pool holds the copy.
	// +kubebuilder:validation:MinLength=1
	Pool string `json:"pool"`
	// Commit is the newest commit it holds; empty for none yet.
	// +optional
	Commit string `json:"commit,omitempty"`
	// Seq is that commit's sequence number on the master.
	// +kubebuilder:validation:Minimum=0
	Seq int64 `json:"seq"`
	// Updated is when it last caught up.
	// +optional
	Updated *Timestamp `json:"updated,omitempty"`
	// LastBytes is the size of the last stream sent to it.
	// +kubebuilder:validation:Minimum=0
	LastBytes int64 `json:"lastBytes"`
}

// Loss is what a failover could not carry over.
type Loss struct {
	// CommitsLost is how many commits the old master had that the new one
	// did not.
	// +kubebuilder:validation:Minimum=0
	CommitsLost int64 `json:"commitsLost"`
	// LastReplicatedCommit is the newest commit the new master had, and
	// LastReplicatedCommitAt when it got it.
	// +optional
	LastReplicatedCommit string `json:"lastReplicatedCommit,omitempty"`
	// +optional
	LastReplicatedCommitAt *Timestamp `json:"lastReplicatedCommitAt,omitempty"`
	// At is when the failover happened.
	// +optional
	At *Timestamp `json:"at,omitempty"`
	// FromPool was master before the failover, ToPool after it.
	FromPool string `json:"fromPool"`
	ToPool   string `json:"toPool"`
}

// DotList is a list of Dots.
//
// +kubebuilder:object:root=true
type DotList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Dot `json:"items"`
}
