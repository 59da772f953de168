package cluster

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/api/v1alpha1"
)

var eventsResource = corev1.SchemeGroupVersion.WithResource("events")

// Event records a Kubernetes Event about a dot. Dots are cluster-scoped,
// and the API keeps events of cluster-scoped objects in "default". Failing
// to record one is logged, never fatal: the loss is also in the Dot's status.
func (k *Kube) Event(ctx context.Context, dotID, reason, message string) {
	klog.InfoS("event", "dot", dotID, "reason", reason, "message", message)
	prefix := dotID
	if len(prefix) > 8 {
		prefix = prefix[:8]
	}
	now := metav1.Now()
	ev, err := toUnstructured(&corev1.Event{
		TypeMeta:       metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "dot-" + prefix + "-", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Dot", Name: dotID},
		Reason:         reason, Message: message, Type: corev1.EventTypeWarning,
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		Source: corev1.EventSource{Component: "dotmesh-csi"},
	})
	if err == nil {
		_, err = k.dyn.Resource(eventsResource).Namespace(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{})
	}
	if err != nil {
		klog.ErrorS(err, "recording event", "dot", dotID, "reason", reason)
	}
}
