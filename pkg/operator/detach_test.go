package operator

import (
	"context"
	"sort"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func attachment(name, pv, node string) *storagev1.VolumeAttachment {
	return &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: storagev1.VolumeAttachmentSpec{NodeName: node, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}}}
}

// Only the attachment of a moved backing PV to a deleted node goes: not
// one to a live node, not one whose PVC is still assigned to the deleted
// node (it may return), and not another driver's volume.
func TestDetachFromGoneNodes(t *testing.T) {
	cs := fake.NewSimpleClientset(
		attachment("moved", "pv-moved", "gone"),
		attachment("live", "pv-live", "n1"),
		attachment("waiting", "pv-waiting", "gone2"),
		attachment("other", "pv-other", "gone"),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}},
	)
	s := State{
		Nodes: []Node{{Name: "n1"}, {Name: "n2"}},
		PVCs: []BackingPVC{
			{Name: "a", Node: "n2", Volume: "pv-moved"},
			{Name: "b", Node: "n1", Volume: "pv-live"},
			{Name: "c", Node: "gone2", Volume: "pv-waiting"},
		},
	}
	if err := detachFromGoneNodes(context.Background(), cs, s); err != nil {
		t.Fatal(err)
	}
	list, err := cs.StorageV1().VolumeAttachments().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, va := range list.Items {
		left = append(left, va.Name)
	}
	sort.Strings(left)
	if want := []string{"live", "other", "waiting"}; len(left) != 3 || left[0] != want[0] || left[1] != want[1] || left[2] != want[2] {
		t.Fatalf("attachments left: %v, want %v", left, want)
	}
}

// With every assigned PVC's pool pod Running on its node, no disk is
// waiting to attach, and the pass does not even list attachments.
func TestDetachListsNothingWhenNoPoolPodWaits(t *testing.T) {
	cs := fake.NewSimpleClientset(attachment("moved", "pv-moved", "gone"))
	s := State{
		Nodes: []Node{{Name: "n1"}},
		PVCs:  []BackingPVC{{Name: "a", Node: "n1", Volume: "pv-moved"}},
		Pods:  []PoolPod{{Name: "a-n1", Pool: "a", Node: "n1", Running: true}},
	}
	if err := detachFromGoneNodes(context.Background(), cs, s); err != nil {
		t.Fatal(err)
	}
	if acts := cs.Actions(); len(acts) != 0 {
		t.Fatalf("API calls with no pool pod waiting: %v", acts)
	}
}
