package operator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const testNS = "dotmesh-system"

func nodeObj(name string, labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func configMap(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultConfigMap, Namespace: testNS}, Data: data}
}

// testOperator is an operator over a fake clientset, with a clock the test
// moves and predictable PVC names.
func testOperator(objs ...runtime.Object) (*operator, *fake.Clientset, *time.Time) {
	cs := fake.NewClientset(objs...)
	op := newOperator(cs, Options{Namespace: testNS, ConfigMap: DefaultConfigMap, PoolImage: "example.com/dotmesh:test", Resync: time.Millisecond, Identity: "test"})
	now := t0
	op.now = func() time.Time { return now }
	op.newName = seqNames()
	return op, cs, &now
}

func mustPass(t *testing.T, op *operator) {
	t.Helper()
	if err := op.pass(context.Background()); err != nil {
		t.Fatalf("pass: %v", err)
	}
}

func listPVCs(t *testing.T, cs *fake.Clientset) []corev1.PersistentVolumeClaim {
	t.Helper()
	l, err := cs.CoreV1().PersistentVolumeClaims(testNS).List(context.Background(), metav1.ListOptions{LabelSelector: BackingSelector()})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func listPods(t *testing.T, cs *fake.Clientset) []corev1.Pod {
	t.Helper()
	l, err := cs.CoreV1().Pods(testNS).List(context.Background(), metav1.ListOptions{LabelSelector: PoolPodSelector()})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// markRunning plays the scheduler and kubelet: every pool pod is placed on
// the node its affinity names, and runs.
func markRunning(t *testing.T, cs *fake.Clientset) {
	t.Helper()
	for _, pod := range listPods(t, cs) {
		pod.Spec.NodeName = pod.Annotations[AnnotationNode]
		pod.Status.Phase = corev1.PodRunning
		if _, err := cs.CoreV1().Pods(testNS).Update(context.Background(), &pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func events(t *testing.T, cs *fake.Clientset, ns string) []corev1.Event {
	t.Helper()
	l, err := cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func TestPassInstallsOnThreeNodes(t *testing.T) {
	op, cs, _ := testOperator(
		configMap(map[string]string{KeyMode: "pvPerNode", KeyBackingStorageClass: "fast", KeyBackingSize: "20Gi"}),
		nodeObj("node1", nil), nodeObj("node2", nil), nodeObj("node3", nil),
	)
	mustPass(t, op)

	pvcs := listPVCs(t, cs)
	if len(pvcs) != 3 {
		t.Fatalf("%d backing PVCs, want 3", len(pvcs))
	}
	assigned := map[string]string{}
	for _, p := range pvcs {
		if !strings.HasPrefix(p.Name, PVCNamePrefix) {
			t.Errorf("PVC name %q", p.Name)
		}
		if p.Labels[LabelPartOf] != PartOf || p.Labels[LabelRole] != RoleBacking || p.Labels[LabelAuto] != "true" {
			t.Errorf("PVC %s labels %v", p.Name, p.Labels)
		}
		if _, ok := p.Annotations[AnnotationOrphanedAt]; ok {
			t.Errorf("new PVC %s is marked orphaned", p.Name)
		}
		if p.Spec.StorageClassName == nil || *p.Spec.StorageClassName != "fast" {
			t.Errorf("PVC %s storage class %v", p.Name, p.Spec.StorageClassName)
		}
		if q := p.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "20Gi" {
			t.Errorf("PVC %s size %s", p.Name, q.String())
		}
		if !slices.Equal(p.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) ||
			p.Spec.VolumeMode == nil || *p.Spec.VolumeMode != corev1.PersistentVolumeFilesystem {
			t.Errorf("PVC %s access %v mode %v", p.Name, p.Spec.AccessModes, p.Spec.VolumeMode)
		}
		assigned[p.Annotations[AnnotationNode]] = p.Name
	}
	for _, n := range []string{"node1", "node2", "node3"} {
		if assigned[n] == "" {
			t.Errorf("no PVC assigned to %s: %v", n, assigned)
		}
	}

	markRunning(t, cs)
	mustPass(t, op)
	if n := len(listPVCs(t, cs)); n != 3 {
		t.Errorf("%d backing PVCs after a second pass, want 3", n)
	}
	pods := listPods(t, cs)
	if len(pods) != 3 {
		t.Fatalf("%d pool pods, want 3", len(pods))
	}
	for _, pod := range pods {
		node := pod.Spec.NodeName
		pool := assigned[node]
		if pod.Name != pool+"-"+node {
			t.Errorf("pod %s on %s, want name %s-%s", pod.Name, node, pool, node)
		}
		if pod.Labels[LabelPartOf] != PartOf || pod.Labels[LabelRole] != RolePool || pod.Labels[LabelPool] != pool {
			t.Errorf("pod %s labels %v", pod.Name, pod.Labels)
		}
		if len(pod.OwnerReferences) != 0 {
			t.Errorf("pod %s has owners %v", pod.Name, pod.OwnerReferences)
		}
		terms := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		if len(terms) != 1 || len(terms[0].MatchFields) != 1 || terms[0].MatchFields[0].Key != "metadata.name" ||
			terms[0].MatchFields[0].Operator != corev1.NodeSelectorOpIn || !slices.Equal(terms[0].MatchFields[0].Values, []string{node}) {
			t.Errorf("pod %s affinity %+v", pod.Name, terms)
		}
		if len(pod.Spec.Tolerations) != 1 || pod.Spec.Tolerations[0].Operator != corev1.TolerationOpExists || pod.Spec.Tolerations[0].Key != "" {
			t.Errorf("pod %s tolerations %v", pod.Name, pod.Spec.Tolerations)
		}
		if pod.Spec.PriorityClassName != "system-node-critical" || *pod.Spec.TerminationGracePeriodSeconds != 120 {
			t.Errorf("pod %s priority %q grace %d", pod.Name, pod.Spec.PriorityClassName, *pod.Spec.TerminationGracePeriodSeconds)
		}
		c := pod.Spec.Containers
		if len(c) != 1 || c[0].Name != "pool" || c[0].Image != "example.com/dotmesh:test" || c[0].ImagePullPolicy != corev1.PullIfNotPresent ||
			!slices.Equal(c[0].Command, []string{"/dotmesh-node", "hold-pool", "--dir=/pool"}) {
			t.Errorf("pod %s container %+v", pod.Name, c)
		}
		if len(c[0].VolumeMounts) != 1 || c[0].VolumeMounts[0].MountPath != "/pool" ||
			len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].Name != c[0].VolumeMounts[0].Name ||
			pod.Spec.Volumes[0].PersistentVolumeClaim == nil || pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != pool {
			t.Errorf("pod %s volumes %+v mounts %+v", pod.Name, pod.Spec.Volumes, c[0].VolumeMounts)
		}
	}
}

func TestPassDefaultStorageClassIsNil(t *testing.T) {
	op, cs, _ := testOperator(configMap(map[string]string{KeyMode: "pvPerNode"}), nodeObj("node1", nil))
	mustPass(t, op)
	for _, p := range listPVCs(t, cs) {
		if p.Spec.StorageClassName != nil {
			t.Errorf("PVC %s storage class %q, want none set (the cluster default)", p.Name, *p.Spec.StorageClassName)
		}
	}
}

func TestPassLocalModeDoesNothing(t *testing.T) {
	for name, cm := range map[string]*corev1.ConfigMap{"missing": nil, "local": configMap(map[string]string{KeyMode: "local"})} {
		t.Run(name, func(t *testing.T) {
			objs := []runtime.Object{nodeObj("node1", nil)}
			if cm != nil {
				objs = append(objs, cm)
			}
			op, cs, _ := testOperator(objs...)
			mustPass(t, op)
			if n := len(listPVCs(t, cs)); n != 0 {
				t.Errorf("%d PVCs in local mode", n)
			}
		})
	}
}

func TestPassReplacesNode(t *testing.T) {
	op, cs, _ := testOperator(configMap(map[string]string{KeyMode: "pvPerNode"}), nodeObj("node1", nil), nodeObj("node2", nil))
	mustPass(t, op)
	markRunning(t, cs)
	ctx := context.Background()
	if err := cs.CoreV1().Nodes().Delete(ctx, "node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, nodeObj("node4", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mustPass(t, op) // reassign, delete node1's pod
	mustPass(t, op) // the old pod is gone: a new one on node4
	pvcs := listPVCs(t, cs)
	if len(pvcs) != 2 {
		t.Fatalf("%d PVCs after replacing a node, want 2", len(pvcs))
	}
	for _, p := range pvcs {
		if p.Name == "dotmesh-pool-000001" && p.Annotations[AnnotationNode] != "node4" {
			t.Errorf("node1's PVC is on %q, want node4", p.Annotations[AnnotationNode])
		}
	}
	var got []string
	for _, pod := range listPods(t, cs) {
		got = append(got, pod.Name)
	}
	slices.Sort(got)
	if want := []string{"dotmesh-pool-000001-node4", "dotmesh-pool-000002-node2"}; !slices.Equal(got, want) {
		t.Errorf("pool pods %v, want %v", got, want)
	}
}

func TestPassStampsAndClearsOrphans(t *testing.T) {
	op, cs, now := testOperator(configMap(map[string]string{KeyMode: "pvPerNode"}), nodeObj("node1", nil))
	mustPass(t, op)
	markRunning(t, cs)
	ctx := context.Background()
	if err := cs.CoreV1().Nodes().Delete(ctx, "node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(time.Minute)
	mustPass(t, op)
	p := listPVCs(t, cs)[0]
	if got, want := p.Annotations[AnnotationOrphanedAt], now.Format(time.RFC3339); got != want {
		t.Errorf("orphaned-at %q, want %q", got, want)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, nodeObj("node1", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mustPass(t, op)
	p = listPVCs(t, cs)[0]
	if _, ok := p.Annotations[AnnotationOrphanedAt]; ok || p.Annotations[AnnotationNode] != "node1" {
		t.Errorf("after node1 came back: annotations %v", p.Annotations)
	}
}

func TestPassCapEventOnce(t *testing.T) {
	op, cs, _ := testOperator(configMap(map[string]string{KeyMode: "pvPerNode", KeyMaxAutoPVCs: "1"}), nodeObj("node1", nil), nodeObj("node2", nil))
	for range 5 {
		mustPass(t, op)
	}
	evs := events(t, cs, metav1.NamespaceDefault)
	if len(evs) != 1 {
		t.Fatalf("%d events after 5 passes, want 1: %+v", len(evs), evs)
	}
	ev := evs[0]
	if ev.Reason != ReasonCapReached || ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != "node2" {
		t.Errorf("event %+v", ev)
	}
	if n := len(listPVCs(t, cs)); n != 1 {
		t.Errorf("%d PVCs with a cap of 1", n)
	}
}

func TestPassInvalidConfigKeepsLastGood(t *testing.T) {
	ctx := context.Background()
	op, cs, _ := testOperator(configMap(map[string]string{KeyMode: "pvPerNode"}), nodeObj("node1", nil))
	mustPass(t, op)

	bad := configMap(map[string]string{KeyMode: "pvPerNode", KeyBackingSize: "lots"})
	bad.ResourceVersion = "2"
	if _, err := cs.CoreV1().ConfigMaps(testNS).Update(ctx, bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, nodeObj("node2", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		mustPass(t, op)
	}
	if n := len(listPVCs(t, cs)); n != 2 {
		t.Errorf("%d PVCs: the last good configuration should have given node2 one", n)
	}
	evs := events(t, cs, testNS)
	if len(evs) != 1 || evs[0].Reason != ReasonInvalidConfig || evs[0].InvolvedObject.Kind != "ConfigMap" ||
		!strings.Contains(evs[0].Message, KeyBackingSize) {
		t.Errorf("events %+v, want one InvalidConfig naming %s", evs, KeyBackingSize)
	}
}

func TestPassInvalidConfigWithoutGoodDoesNothing(t *testing.T) {
	op, cs, _ := testOperator(configMap(map[string]string{KeyMode: "pv-per-node"}), nodeObj("node1", nil))
	mustPass(t, op)
	if n := len(listPVCs(t, cs)); n != 0 {
		t.Errorf("%d PVCs with no good configuration", n)
	}
	if n := len(events(t, cs, testNS)); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
}

func TestRunLeadsAndReleases(t *testing.T) {
	cs := fake.NewClientset(configMap(map[string]string{KeyMode: "pvPerNode"}), nodeObj("node1", nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cs, Options{Namespace: testNS, Resync: 10 * time.Millisecond, Identity: "me"})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(listPVCs(t, cs)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no backing PVC within 10s of Run")
		}
		time.Sleep(10 * time.Millisecond)
	}
	lease, err := cs.CoordinationV1().Leases(testNS).Get(context.Background(), LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "me" {
		t.Errorf("lease holder %v", lease.Spec.HolderIdentity)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	lease, err = cs.CoordinationV1().Leases(testNS).Get(context.Background(), LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h == "me" {
		t.Errorf("lease still held by %q after cancel", *h)
	}
}

func TestApplyGoesOnPastFailures(t *testing.T) {
	cs := fake.NewClientset()
	a := newApplier(cs, testNS, "img", newWarnings(cs))
	acts := []Action{
		{Kind: ClearOrphaned, PVC: "missing", Why: "test"},
		{Kind: CreatePod, PVC: "missing", Node: "node1", Why: "test"},
		{Kind: CreatePVC, PVC: "dotmesh-pool-abc123", Node: "node1", Why: "test"},
		{Kind: CreatePod, PVC: "dotmesh-pool-abc123", Node: "node1", Why: "test"},
	}
	err := a.apply(context.Background(), pvPerNode(), State{}, acts)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("apply error %v, want one naming PVC missing", err)
	}
	pods := listPods(t, cs)
	if len(pods) != 1 || pods[0].Labels[LabelPool] != "dotmesh-pool-abc123" {
		t.Errorf("pods %v: want only the one for the PVC that was made", podNames(pods))
	}
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, fmt.Sprintf("%s(%s)", p.Name, p.Labels[LabelPool]))
	}
	return out
}

func TestRandomPVCName(t *testing.T) {
	n := RandomPVCName()
	if len(n) != len(PVCNamePrefix)+6 || !strings.HasPrefix(n, PVCNamePrefix) || strings.Trim(n[len(PVCNamePrefix):], "0123456789abcdef") != "" {
		t.Errorf("RandomPVCName() = %q", n)
	}
}

func TestAssignIsConditionalOnResourceVersion(t *testing.T) {
	cs := fake.NewClientset()
	var patch string
	cs.PrependReactor("patch", "persistentvolumeclaims", func(action k8stesting.Action) (bool, runtime.Object, error) {
		patch = string(action.(k8stesting.PatchAction).GetPatch())
		return true, &corev1.PersistentVolumeClaim{}, nil
	})
	a := newApplier(cs, testNS, "img", newWarnings(cs))
	s := State{PVCs: []BackingPVC{{Name: "p", Node: "node1", ResourceVersion: "42"}}}
	if err := a.apply(context.Background(), pvPerNode(), s, []Action{{Kind: AssignPVC, PVC: "p", From: "node1", Node: "node4", Why: "test"}}); err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{"annotations":{"dotmesh.io/node":"node4","dotmesh.io/orphaned-at":null},"resourceVersion":"42"}}`
	if patch != want {
		t.Errorf("patch %s, want %s", patch, want)
	}
}
