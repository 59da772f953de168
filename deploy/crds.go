// Package deploy holds the manifests a cluster admin installs. The CRDs are
// also embedded, so the harnesses and the controller install exactly these
// files and no copy can drift from them.
package deploy

import "embed"

// CRDs holds the project's CustomResourceDefinitions, which `make
// generate` writes from the Go types in api/v1alpha1.
//
//go:embed base/crds/*.yaml
var CRDs embed.FS
