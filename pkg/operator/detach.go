package operator

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// detachFromGoneNodes deletes the VolumeAttachments that still tie a
// backing PV to a node whose Node object is gone, once the operator has
// given that PVC to another node. Kubernetes would otherwise keep such an
// attachment for its force-detach timeout (6 minutes) after the node's
// pods are gone, since a deleted node never reports its volumes unmounted,
// and the new node's pool pod would wait for the disk all that time. A
// node that was deleted but may return (its PVC still assigned to it,
// within the orphan grace period) keeps its attachment: it may still have
// the pool imported.
func detachFromGoneNodes(ctx context.Context, cs kubernetes.Interface, s State) error {
	exists := map[string]bool{}
	for _, n := range s.Nodes {
		exists[n.Name] = true
	}
	running := map[string]bool{} // pool -> its pod runs on the PVC's node
	for _, pod := range s.Pods {
		running[pod.Pool+"/"+pod.Node] = running[pod.Pool+"/"+pod.Node] || pod.Running
	}
	assigned := map[string]string{} // PV -> the node its PVC is assigned to
	waiting := false
	for _, p := range s.PVCs {
		if p.Volume != "" {
			assigned[p.Volume] = p.Node
			// Only a pool pod still waiting for its disk can be held up
			// by a stale attachment; with none, the pass lists nothing.
			waiting = waiting || (exists[p.Node] && !running[p.Name+"/"+p.Node])
		}
	}
	if !waiting {
		return nil
	}
	vas, err := cs.StorageV1().VolumeAttachments().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing VolumeAttachments: %w", err)
	}
	var errs []error
	for _, va := range vas.Items {
		pv := va.Spec.Source.PersistentVolumeName
		if pv == nil || va.DeletionTimestamp != nil || exists[va.Spec.NodeName] {
			continue
		}
		to, ok := assigned[*pv]
		if !ok || to == "" || to == va.Spec.NodeName {
			continue
		}
		klog.InfoS("detaching a backing volume from a node that no longer exists; its PVC now belongs to another node",
			"pv", *pv, "goneNode", va.Spec.NodeName, "newNode", to, "volumeAttachment", va.Name)
		err := cs.StorageV1().VolumeAttachments().Delete(ctx, va.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("VolumeAttachment %s of PV %s: %w", va.Name, *pv, err))
		}
	}
	return errors.Join(errs...)
}
