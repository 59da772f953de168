//go:build zfs

// Package k8s runs the driver the way users meet it: deploy/ installed with
// kubectl on a real Kubernetes (built from source, started by the
// e2e/multinode harness with containerd and a kubelet per node), and
// StorageClasses, PVCs, Pods and VolumeSnapshots driven through the API.
package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/dotmesh-io/dotmesh-csi/e2e/multinode"
	"github.com/dotmesh-io/dotmesh-csi/e2e/procs"
)

const (
	driverName   = "csi.dotmesh.io"
	storageClass = "dotmesh" // deploy/base/storageclass.yaml
	snapClass    = "dotmesh" // deploy/base/volumesnapshotclass.yaml
	snapVersion  = "v8.7.0"
)

var snapGVR = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshots"}

// env is one cluster with the driver installed, shared by the scenarios.
type env struct {
	t    testing.TB // the running scenario
	root testing.TB // the whole run, which owns the cluster
	h    *multinode.Harness
	cs   kubernetes.Interface
	dyn  dynamic.Interface
	ns   string
}

// images are what make image and make e2e-images wrote.
func images(t testing.TB) []string {
	var out []string
	for _, name := range []string{"dotmesh-csi", "csi-provisioner", "csi-snapshotter", "snapshot-controller", "csi-resizer", "pause", "busybox"} {
		p := filepath.Join(procs.Root(), "bin", "images", name+".tar")
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("image %s missing: run `make e2e-k8s`, which builds it (%v)", p, err)
		}
		out = append(out, p)
	}
	return out
}

// install starts a one-node cluster and installs deploy/overlays/e2e, the
// same manifests users apply, then waits until the kubelet has registered
// the driver.
func install(t testing.TB) *env { return installNodes(t, 1) }

func installNodes(t testing.TB, nodes int) *env { return installOverlay(t, nodes, "e2e", nil) }

// installOverlay is installNodes with deploy/overlays/<overlay>, after
// setup (if any) has prepared the cluster.
func installOverlay(t testing.TB, nodes int, overlay string, setup func(*multinode.Harness)) *env {
	start := time.Now()
	h := multinode.New(t, multinode.Options{Nodes: nodes, Kubernetes: true, Images: images(t)})
	t.Logf("cluster up in %s", time.Since(start).Round(time.Millisecond))
	if setup != nil {
		setup(h)
	}
	dyn, err := dynamic.NewForConfig(h.Rest)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: t, h: h, cs: h.Client, dyn: dyn, ns: "e2e-" + h.ID}

	// The VolumeSnapshot CRDs come with external-snapshotter's client
	// module; applied one by one because the folder's kustomization.yaml
	// is not meant for kubectl.
	dir := moduleDir(t, "github.com/kubernetes-csi/external-snapshotter/client/v8@"+snapVersion)
	crds, _ := filepath.Glob(filepath.Join(dir, "config", "crd", "*storage.k8s.io_*.yaml"))
	if len(crds) == 0 {
		t.Fatalf("no snapshot CRDs under %s", dir)
	}
	for _, f := range crds {
		e.kubectl("apply", "--server-side", "-f", f)
	}
	e.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")

	start = time.Now()
	e.kubectl("apply", "-k", filepath.Join(procs.Root(), "deploy", "overlays", overlay))
	e.kubectl("-n", "dotmesh-system", "rollout", "status", "daemonset/dotmesh-node", "--timeout=180s")
	e.kubectl("-n", "dotmesh-system", "rollout", "status", "deployment/dotmesh-controller", "--timeout=180s")
	for _, n := range h.Nodes {
		e.waitDriverRegistered(n.Name, 2*time.Minute)
	}
	t.Logf("driver installed and registered in %s", time.Since(start).Round(time.Millisecond))

	if _, err := e.cs.CoreV1().Namespaces().Create(e.ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Wait for the namespace's default ServiceAccount, or the first pods
	// are refused.
	e.eventually("default ServiceAccount", time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().ServiceAccounts(e.ns).Get(e.ctx(), "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	t.Cleanup(func() { e.deleteWorkloads() })
	t.Cleanup(e.dumpOnFailure) // first: before the workloads go
	return e
}

func moduleDir(t testing.TB, modVersion string) string {
	out, err := exec.Command("go", "mod", "download", "-json", modVersion).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", modVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("no module folder for %s in %s (%v)", modVersion, out, err)
	}
	return mod.Dir
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) kubectl(args ...string) string {
	e.t.Helper()
	out, err := e.h.Kubectl(e.ctx(), args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// eventually polls ok until it holds, failing with ok's last word.
func (e *env) eventually(what string, limit time.Duration, ok func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		done, last := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within %s: %s", what, limit, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) waitDriverRegistered(node string, limit time.Duration) {
	e.eventually("driver registered on "+node, limit, func() (bool, string) {
		cn, err := e.cs.StorageV1().CSINodes().Get(e.ctx(), node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, d := range cn.Spec.Drivers {
			if d.Name == driverName {
				return true, ""
			}
		}
		return false, fmt.Sprintf("CSINode drivers: %+v", cn.Spec.Drivers)
	})
}

// pvc makes a claim of size on class, optionally from a data source
// (a VolumeSnapshot or another claim).
func (e *env) pvc(name, class, size string, source *corev1.TypedLocalObjectReference) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
			DataSource:       source,
		},
	}
	out, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Create(e.ctx(), c, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// pod runs busybox with the claim at /data. Its shell exits on SIGTERM
// (as PID 1 it would ignore it) so deletes are quick and graceful: a force
// delete would let DeleteVolume run before the unmount.
func (e *env) pod(name, claim, script string) *corev1.Pod {
	e.t.Helper()
	out, err := e.cs.CoreV1().Pods(e.ns).Create(e.ctx(), e.podSpec(name, claim, script), metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// podSpec is that pod; with claim "" its /data is an emptyDir instead.
func (e *env) podSpec(name, claim, script string) *corev1.Pod {
	grace := int64(5)
	if script == "" {
		script = "while true; do sleep 1; done"
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "c", Image: "docker.io/library/busybox:e2e", ImagePullPolicy: corev1.PullNever,
				Command:      []string{"sh", "-c", "trap 'exit 0' TERM; " + script + " & wait"},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
	if claim == "" {
		p.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	}
	return p
}

func (e *env) waitRunning(name string, limit time.Duration) *corev1.Pod {
	e.t.Helper()
	var pod *corev1.Pod
	e.eventually("pod "+name+" Running", limit, func() (bool, string) {
		p, err := e.cs.CoreV1().Pods(e.ns).Get(e.ctx(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pod = p
		return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("phase %s, conditions %+v; events: %s", p.Status.Phase, p.Status.Conditions, e.events(name))
	})
	return pod
}

// deletePod deletes gracefully and waits until the pod object is gone,
// which the kubelet allows only after the volumes are unmounted.
func (e *env) deletePod(name string) {
	e.t.Helper()
	err := e.cs.CoreV1().Pods(e.ns).Delete(e.ctx(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	e.eventually("pod "+name+" gone", 2*time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().Pods(e.ns).Get(e.ctx(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// exec runs a shell command in the pod and returns its output.
func (e *env) exec(pod, script string) string {
	e.t.Helper()
	return strings.TrimSpace(e.kubectl("-n", e.ns, "exec", pod, "--", "sh", "-c", script))
}

// volumeHandle is the dot ID of the claim's PV.
func (e *env) volumeHandle(claim string) string {
	e.t.Helper()
	var handle string
	e.eventually("claim "+claim+" bound", 2*time.Minute, func() (bool, string) {
		c, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx(), claim, metav1.GetOptions{})
		if err != nil || c.Spec.VolumeName == "" {
			return false, fmt.Sprint(err)
		}
		pv, err := e.cs.CoreV1().PersistentVolumes().Get(e.ctx(), c.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		handle = pv.Spec.CSI.VolumeHandle
		return true, ""
	})
	return handle
}

func (e *env) snapshot(name, claim string) {
	e.t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"volumeSnapshotClassName": snapClass,
			"source": map[string]any{"persistentVolumeClaimName": claim}},
	}}
	if _, err := e.dyn.Resource(snapGVR).Namespace(e.ns).Create(e.ctx(), obj, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("snapshot "+name+" readyToUse", 2*time.Minute, func() (bool, string) {
		s, err := e.dyn.Resource(snapGVR).Namespace(e.ns).Get(e.ctx(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ready, _, _ := unstructured.NestedBool(s.Object, "status", "readyToUse")
		return ready, fmt.Sprintf("status %v; events: %s", s.Object["status"], e.events(name))
	})
}

func (e *env) deleteSnapshot(name string) {
	e.t.Helper()
	if err := e.dyn.Resource(snapGVR).Namespace(e.ns).Delete(e.ctx(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	e.eventually("snapshot "+name+" gone", 2*time.Minute, func() (bool, string) {
		_, err := e.dyn.Resource(snapGVR).Namespace(e.ns).Get(e.ctx(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// deletePVC deletes a claim and waits for its PV to go, which happens
// after DeleteVolume succeeded.
func (e *env) deletePVC(name string) {
	e.t.Helper()
	c, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Delete(e.ctx(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	if c.Spec.VolumeName == "" {
		return
	}
	e.eventually("PV of "+name+" deleted", 2*time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().PersistentVolumes().Get(e.ctx(), c.Spec.VolumeName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// datasets lists the node's ZFS datasets and snapshots.
func (e *env) datasets() string {
	e.t.Helper()
	out, err := e.h.Nodes[0].Exec(e.ctx(), "zfs", "list", "-H", "-t", "all", "-o", "name")
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// events is the claim's or pod's events, for failure messages.
func (e *env) events(name string) string {
	list, err := e.cs.CoreV1().Events(e.ns).List(e.ctx(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, ev := range list.Items {
		fmt.Fprintf(&b, "[%s %s: %s] ", ev.Type, ev.Reason, ev.Message)
	}
	return b.String()
}

func (e *env) storageClass(name string, params map[string]string, mode storagev1.VolumeBindingMode) {
	e.t.Helper()
	expand := true
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: driverName, Parameters: params,
		VolumeBindingMode: &mode, AllowVolumeExpansion: &expand}
	if _, err := e.cs.StorageV1().StorageClasses().Create(e.ctx(), sc, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = e.cs.StorageV1().StorageClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// deleteWorkloads removes what the scenarios left, gracefully, so the
// driver unpublishes and deletes through CSI before the cluster goes.
//
// It reports whether everything went; what is left, it logs.
func (e *env) deleteWorkloads() (gone bool) {
	if e.root.Failed() && os.Getenv("E2E_HOLD_FILE") != "" {
		return false // left for the person holding the cluster
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	defer func() {
		if gone = ctx.Err() == nil; !gone {
			out, _ := e.h.Kubectl(context.Background(), "get", "pods,pvc,pv,volumesnapshots", "-n", e.ns)
			e.root.Logf("workloads not all gone after %s:\n%s", time.Since(start).Round(time.Second), out)
			return
		}
		e.root.Logf("workloads deleted in %s", time.Since(start).Round(100*time.Millisecond))
	}()
	_ = e.cs.CoreV1().Pods(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	for ctx.Err() == nil {
		pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		if err == nil && len(pods.Items) == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	_ = e.dyn.Resource(snapGVR).Namespace(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	_ = e.cs.CoreV1().PersistentVolumeClaims(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	// The scenarios' volumes, not the backing PVs of PV-per-node mode,
	// which the operator keeps for as long as the cluster lives.
	for ctx.Err() == nil {
		pvs, err := e.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err == nil && !slices.ContainsFunc(pvs.Items, func(pv corev1.PersistentVolume) bool {
			return pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == e.ns
		}) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	return // gone is set by the deferred report
}

// dumpOnFailure prints what a reader needs to see why.
func (e *env) dumpOnFailure() {
	e.t = e.root
	if !e.t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"get", "pods,pvc,pv", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", "dotmesh-system", "logs", "-l", "app.kubernetes.io/component=node", "--tail=60", "--all-containers"},
		{"-n", "dotmesh-system", "logs", "-l", "app.kubernetes.io/component=controller", "--tail=60", "--all-containers"},
	} {
		out, err := e.h.Kubectl(ctx, args...)
		e.t.Logf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	// For a person debugging: the cluster stays up while this file exists.
	if f := os.Getenv("E2E_HOLD_FILE"); f != "" {
		e.t.Logf("holding the cluster while %s exists (kubeconfig %s, control plane netns %s)", f, e.h.Kubeconfig, e.h.CPNetns)
		for {
			if _, err := os.Stat(f); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}
}
