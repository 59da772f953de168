package cluster

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/dotmesh-io/dotmesh-csi/api/v1alpha1"
)

// The embedded CRDs (generated from api/v1alpha1) define the resources
// Kube addresses, with the status subresource its writes go through.
func TestEmbeddedCRDsServeTheViewsResources(t *testing.T) {
	crds, err := embeddedCRDs()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, crd := range crds {
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			v := v.(map[string]any)
			if _, ok, _ := unstructured.NestedMap(v, "subresources", "status"); !ok {
				t.Errorf("CRD %s version %s has no status subresource", crd.GetName(), v["name"])
			}
			served[group+"/"+v["name"].(string)+"/"+plural] = true
		}
	}
	for _, r := range []schema.GroupVersionResource{v1alpha1.DotsResource, v1alpha1.DotPoolsResource} {
		if !served[r.Group+"/"+r.Version+"/"+r.Resource] {
			t.Errorf("no embedded CRD serves %s (have %v)", r, served)
		}
	}
}
