package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API's group and version.
var GroupVersion = schema.GroupVersion{Group: "dotmesh.io", Version: "v1alpha1"}

// The resources, as clients address them.
var (
	DotsResource     = GroupVersion.WithResource("dots")
	DotPoolsResource = GroupVersion.WithResource("dotpools")
)

// AddToScheme registers the API's kinds in s, for typed clients.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Dot{}, &DotList{}, &DotPool{}, &DotPoolList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
