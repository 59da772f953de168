package operator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// RandomPVCName is a new backing PVC name: the prefix and 6 random hex
// characters. Plan avoids names already taken.
func RandomPVCName() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return PVCNamePrefix + hex.EncodeToString(b)
}

// repeatQuiet is how long an action that keeps failing the same way is
// logged at V(2) only, between two lines at the default level: a pass every
// two seconds must not bury the log under one stuck PVC.
const repeatQuiet = 5 * time.Minute

// applier carries out Plan's actions.
type applier struct {
	cs        kubernetes.Interface
	namespace string
	image     string
	warnings  *warnings
	// failing remembers the actions that failed, and how, and when that was
	// last logged at the default level.
	failing map[string]failure
}

type failure struct {
	err    string
	logged time.Time
}

func newApplier(cs kubernetes.Interface, namespace, image string, w *warnings) *applier {
	return &applier{cs: cs, namespace: namespace, image: image, warnings: w, failing: map[string]failure{}}
}

// apply does every action, going on past failures. A pod action waits for
// the next pass when its PVC's action failed in this one: a pod for a PVC
// that was never made, or moved off a node the PVC is still assigned to,
// would only have to be undone.
func (a *applier) apply(ctx context.Context, cfg Config, s State, acts []Action) error {
	versions := map[string]string{}
	for _, p := range s.PVCs {
		versions[p.Name] = p.ResourceVersion
	}
	uids := map[string]types.UID{}
	for _, p := range s.Pods {
		uids[p.Name] = p.UID
	}
	failed := map[string]bool{}
	seen := map[string]bool{}
	var errs []error
	for _, act := range acts {
		if err := ctx.Err(); err != nil {
			// The term is over (or the process is stopping): the next
			// leader plans afresh.
			return errors.Join(append(errs, err)...)
		}
		key := actionKey(act)
		seen[key] = true
		if (act.Kind == CreatePod || act.Kind == DeletePod) && failed[act.PVC] {
			klog.V(2).InfoS("not changing pool pods of a backing PVC whose change failed; next pass", logKV(act)...)
			continue
		}
		if act.Kind == Warn {
			if a.warnings.warn(ctx, nodeRef(act.Node), act.Reason, act.Why) {
				klog.InfoS(act.Why, logKV(act)...)
			}
			continue
		}
		quiet := a.quiet(key)
		if quiet {
			klog.V(2).InfoS(act.Why, logKV(act)...)
		} else {
			klog.InfoS(act.Why, logKV(act)...)
		}
		err := a.do(ctx, cfg, act, versions[act.PVC], uids[act.Pod])
		if err == nil {
			delete(a.failing, key)
			continue
		}
		errs = append(errs, err)
		if act.Kind != CreatePod && act.Kind != DeletePod {
			failed[act.PVC] = true
		}
		a.logFailure(key, err, act)
	}
	// An action Plan no longer asks for has stopped failing as far as the
	// log is concerned; if it comes back, it is news again.
	for key := range a.failing {
		if !seen[key] {
			delete(a.failing, key)
		}
	}
	return errors.Join(errs...)
}

func (a *applier) do(ctx context.Context, cfg Config, act Action, rv string, uid types.UID) error {
	pvcs := a.cs.CoreV1().PersistentVolumeClaims(a.namespace)
	pods := a.cs.CoreV1().Pods(a.namespace)
	switch act.Kind {
	case CreatePVC:
		if _, err := pvcs.Create(ctx, backingPVCObject(a.namespace, act.PVC, act.Node, cfg), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating backing PVC %s for node %s: %w", act.PVC, act.Node, err)
		}
	case AssignPVC:
		if err := a.annotate(ctx, act.PVC, rv, map[string]any{AnnotationNode: act.Node, AnnotationOrphanedAt: nil}); err != nil {
			return fmt.Errorf("assigning backing PVC %s from node %q to node %s: %w", act.PVC, act.From, act.Node, err)
		}
	case StampOrphaned:
		if err := a.annotate(ctx, act.PVC, rv, map[string]any{AnnotationOrphanedAt: act.At.UTC().Format(time.RFC3339)}); err != nil {
			return fmt.Errorf("marking backing PVC %s orphaned: %w", act.PVC, err)
		}
	case ClearOrphaned:
		if err := a.annotate(ctx, act.PVC, rv, map[string]any{AnnotationOrphanedAt: nil}); err != nil {
			return fmt.Errorf("clearing orphaned mark of backing PVC %s: %w", act.PVC, err)
		}
	case CreatePod:
		pod := poolPodObject(a.namespace, act.PVC, act.Node, a.image)
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating pool pod %s for backing PVC %s on node %s: %w", pod.Name, act.PVC, act.Node, err)
		}
	case DeletePod:
		opts := metav1.DeleteOptions{}
		if uid != "" {
			// The pod Plan saw, not a namesake made since.
			opts.Preconditions = &metav1.Preconditions{UID: &uid}
		}
		err := pods.Delete(ctx, act.Pod, opts)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting pool pod %s of backing PVC %s on node %s: %w", act.Pod, act.PVC, act.Node, err)
		}
	default:
		return fmt.Errorf("unknown action %q", act.Kind)
	}
	return nil
}

// annotate sets (or, for nil values, removes) annotations on a backing PVC,
// only if it is still at resourceVersion rv: a PVC changed since it was read
// has to be planned again.
func (a *applier) annotate(ctx context.Context, name, rv string, annotations map[string]any) error {
	meta := map[string]any{"annotations": annotations}
	if rv != "" {
		meta["resourceVersion"] = rv
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	_, err = a.cs.CoreV1().PersistentVolumeClaims(a.namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// quiet is whether the action failed the last time too and was logged at
// the default level recently.
func (a *applier) quiet(key string) bool {
	f, ok := a.failing[key]
	return ok && time.Since(f.logged) < repeatQuiet
}

func (a *applier) logFailure(key string, err error, act Action) {
	f, ok := a.failing[key]
	if ok && f.err == err.Error() && time.Since(f.logged) < repeatQuiet {
		klog.V(2).ErrorS(err, "operator action failed again", logKV(act)...)
		return
	}
	klog.ErrorS(err, "operator action failed", logKV(act)...)
	a.failing[key] = failure{err: err.Error(), logged: time.Now()}
}

// actionKey says which actions of two passes are the same one. A new PVC
// gets a new random name every pass, so it is known by its node.
func actionKey(act Action) string {
	if act.Kind == CreatePVC {
		return fmt.Sprintf("%s//%s", act.Kind, act.Node)
	}
	return fmt.Sprintf("%s/%s/%s", act.Kind, act.PVC, act.Node)
}

// logKV names what an action is about, leaving out what it does not touch.
func logKV(act Action) []any {
	var kv []any
	for _, f := range []struct{ k, v string }{{"pvc", act.PVC}, {"pod", act.Pod}, {"node", act.Node}, {"from", act.From}} {
		if f.v != "" {
			kv = append(kv, f.k, f.v)
		}
	}
	if !act.At.IsZero() {
		kv = append(kv, "orphanedAt", act.At.UTC().Format(time.RFC3339))
	}
	return append(kv, "action", string(act.Kind))
}
