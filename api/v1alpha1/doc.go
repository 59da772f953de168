// Package v1alpha1 is the dotmesh.io/v1alpha1 API: the Dot and DotPool
// resources that hold the cluster view (pkg/cluster). These types are the
// one description of that API: `make generate` derives their deep copies
// and the CRDs in deploy/base/crds from them and their markers.
//
// +kubebuilder:object:generate=true
// +groupName=dotmesh.io
package v1alpha1
