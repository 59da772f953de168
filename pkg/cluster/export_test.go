package cluster

import "k8s.io/client-go/dynamic"

// NewKubeOn is a Kube view on dyn, for the tests outside the package.
func NewKubeOn(dyn dynamic.Interface) *Kube { return newKube(dyn) }
