package operator

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// eventComponent is the Event source the operator's Events carry.
const eventComponent = "dotmesh-operator"

// warnings records Warning Events, each once for as long as its condition
// lasts. Plan asks again on every pass while a node has no PVC; an Event
// every two seconds would bury everything else on the node. A condition
// that clears and comes back is recorded again.
type warnings struct {
	cs kubernetes.Interface
	// sent holds the message last recorded for each object and reason.
	sent map[string]string
	// raised holds the keys asked for in this pass.
	raised map[string]bool
}

func newWarnings(cs kubernetes.Interface) *warnings {
	return &warnings{cs: cs, sent: map[string]string{}, raised: map[string]bool{}}
}

// warn records an Event about obj unless the same one is already recorded
// for a condition that has not cleared. It reports whether it recorded one.
func (w *warnings) warn(ctx context.Context, obj corev1.ObjectReference, reason, message string) bool {
	key := obj.Kind + "/" + obj.Namespace + "/" + obj.Name + "/" + reason
	w.raised[key] = true
	if w.sent[key] == message {
		return false
	}
	// Events about cluster-scoped objects (nodes) live in "default".
	ns := obj.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	now := metav1.Now()
	ev := &corev1.Event{
		// Named as client-go's recorder names Events.
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", obj.Name, now.UnixNano()), Namespace: ns},
		InvolvedObject: obj,
		Reason:         reason,
		Message:        message,
		Type:           corev1.EventTypeWarning,
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
		Source:         corev1.EventSource{Component: eventComponent},
	}
	if _, err := w.cs.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		// Not remembered as sent, so the next pass tries again.
		klog.ErrorS(err, "recording event", "kind", obj.Kind, "name", obj.Name, "reason", reason)
		return true
	}
	w.sent[key] = message
	return true
}

// endPass forgets conditions not raised in the pass just finished, so they
// are recorded again if they return. Call it only after a pass that got as
// far as asking for every warning it had.
func (w *warnings) endPass() {
	for key := range w.sent {
		if !w.raised[key] {
			delete(w.sent, key)
		}
	}
	clear(w.raised)
}

// abandonPass drops what a pass that failed part way had raised, keeping
// what was sent: the conditions are unknown, not cleared.
func (w *warnings) abandonPass() {
	clear(w.raised)
}

// nodeRef names a node the way the kubelet does, with its name as its UID,
// which `kubectl describe node` looks for.
func nodeRef(name string) corev1.ObjectReference {
	return corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: name, UID: types.UID(name)}
}

func configMapRef(cm *corev1.ConfigMap) corev1.ObjectReference {
	return corev1.ObjectReference{APIVersion: "v1", Kind: "ConfigMap", Namespace: cm.Namespace, Name: cm.Name,
		UID: cm.UID, ResourceVersion: cm.ResourceVersion}
}
