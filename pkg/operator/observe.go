package operator

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// observe reads what Plan needs: every node, and the backing PVCs and pool
// pods in namespace.
func observe(ctx context.Context, cs kubernetes.Interface, namespace string) (State, error) {
	var s State
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, fmt.Errorf("listing nodes: %w", err)
	}
	for _, n := range nodes.Items {
		s.Nodes = append(s.Nodes, Node{Name: n.Name, Labels: n.Labels})
	}
	pvcs, err := cs.CoreV1().PersistentVolumeClaims(namespace).List(ctx, metav1.ListOptions{LabelSelector: BackingSelector()})
	if err != nil {
		return s, fmt.Errorf("listing backing PVCs in %s: %w", namespace, err)
	}
	for i := range pvcs.Items {
		s.PVCs = append(s.PVCs, backingFrom(&pvcs.Items[i]))
	}
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: PoolPodSelector()})
	if err != nil {
		return s, fmt.Errorf("listing pool pods in %s: %w", namespace, err)
	}
	for i := range pods.Items {
		if pod, ok := poolPodFrom(&pods.Items[i]); ok {
			s.Pods = append(s.Pods, pod)
		}
	}
	return s, nil
}

func backingFrom(pvc *corev1.PersistentVolumeClaim) BackingPVC {
	b := BackingPVC{
		Name:            pvc.Name,
		Node:            pvc.Annotations[AnnotationNode],
		Auto:            pvc.Labels[LabelAuto] == "true",
		Deleting:        pvc.DeletionTimestamp != nil,
		ResourceVersion: pvc.ResourceVersion,
		Volume:          pvc.Spec.VolumeName,
	}
	if v, ok := pvc.Annotations[AnnotationOrphanedAt]; ok {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			klog.ErrorS(err, "backing PVC has an unreadable orphaned-at stamp", "pvc", pvc.Name, "value", v)
			b.BadStamp = true
		}
		b.OrphanedAt = t
	}
	return b
}

// poolPodFrom reads a pool pod. One without a pool label is not the
// operator's to manage, so it is skipped rather than deleted.
func poolPodFrom(pod *corev1.Pod) (PoolPod, bool) {
	pool := pod.Labels[LabelPool]
	if pool == "" {
		klog.V(2).InfoS("ignoring pod with the pool role but no pool label", "pod", pod.Name)
		return PoolPod{}, false
	}
	node := pod.Spec.NodeName
	if node == "" {
		node = pod.Annotations[AnnotationNode]
	}
	return PoolPod{
		Name:        pod.Name,
		Pool:        pool,
		Node:        node,
		Running:     pod.Status.Phase == corev1.PodRunning,
		Terminating: pod.DeletionTimestamp != nil,
		Finished:    pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed,
		UID:         pod.UID,
	}, true
}
