package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DotPool is a ZFS pool as the cluster sees it: which node has it imported
// and where that node's zfsd answers. The node plugin holding the pool
// keeps the status fresh (its heartbeat); a pool with no node is free for
// any node to import.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=dp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name=Node,type=string,JSONPath=`.status.node`
// +kubebuilder:printcolumn:name=Address,type=string,JSONPath=`.status.address`
// +kubebuilder:printcolumn:name=Size,type=integer,JSONPath=`.status.size`
// +kubebuilder:printcolumn:name=Available,type=integer,JSONPath=`.status.available`
// +kubebuilder:printcolumn:name=Heartbeat,type=date,JSONPath=`.status.lastHeartbeat`
type DotPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status DotPoolStatus `json:"status,omitempty"`
}

// DotPoolStatus is the pool as its node last reported it.
type DotPoolStatus struct {
	// Node holds the pool imported; empty once it has exported it.
	// +optional
	Node string `json:"node,omitempty"`
	// Address is the holding node's zfsd API (host:port).
	// +optional
	Address string `json:"address,omitempty"`
	// Size and Available are in bytes.
	// +kubebuilder:validation:Minimum=0
	Size int64 `json:"size"`
	// +kubebuilder:validation:Minimum=0
	Available int64 `json:"available"`
	// Zvols says whether the pool can hold block volumes.
	Zvols bool `json:"zvols"`
	// LastHeartbeat is when the holding node last claimed the pool; another
	// node may take it once this is older than the unreachable period.
	// +optional
	LastHeartbeat *Timestamp `json:"lastHeartbeat,omitempty"`
}

// DotPoolList is a list of DotPools.
//
// +kubebuilder:object:root=true
type DotPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DotPool `json:"items"`
}
