package cluster

import (
	"context"
	"fmt"
	"io/fs"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/api/v1alpha1"
	"github.com/dotmesh-io/dotmesh-csi/deploy"
)

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// EnsureCRDs creates the project's CRDs (deploy/base/crds, generated from
// api/v1alpha1) when missing and waits until the API serves them. CRDs
// already there are left as they are: an upgrade applies deploy/.
func EnsureCRDs(ctx context.Context, cfg *rest.Config) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	crds, err := embeddedCRDs()
	if err != nil {
		return err
	}
	for _, obj := range crds {
		_, err = dyn.Resource(crdResource).Create(ctx, obj, metav1.CreateOptions{})
		switch {
		case err == nil, apierrors.IsAlreadyExists(err):
		case apierrors.IsForbidden(err):
			// Installed from deploy/, the controller has no rights on CRDs
			// (least privilege); the wait below tells whether they are there.
			klog.V(2).InfoS("not allowed to create CRD; expecting it installed", "crd", obj.GetName())
		default:
			return fmt.Errorf("creating CRD %s: %w", obj.GetName(), err)
		}
	}
	for _, gvr := range []schema.GroupVersionResource{v1alpha1.DotPoolsResource, v1alpha1.DotsResource} {
		for {
			_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s not served: %w", gvr.Resource, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// embeddedCRDs reads the CRDs deploy/ embeds.
func embeddedCRDs() ([]*unstructured.Unstructured, error) {
	files, err := fs.Glob(deploy.CRDs, "base/crds/*.yaml")
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		raw, err := deploy.CRDs.ReadFile(f)
		if err != nil {
			return nil, err
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, obj)
	}
	return out, nil
}
