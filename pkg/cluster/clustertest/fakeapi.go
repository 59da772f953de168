package clustertest

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/dotmesh-io/dotmesh-csi/api/v1alpha1"
)

// NewFakeDynamic returns client-go's fake dynamic client answering as the
// API server does on the points the view relies on, which the fake's own
// object tracker does not model: a write carrying a stale resourceVersion
// is refused with a conflict (the compare-and-swap); on Dot and DotPool,
// whose status is a subresource, a create or an update drops or keeps the
// status as it was and only UpdateStatus changes it, changing nothing
// else; a write that changes nothing keeps the version; generateName makes
// a name. It serves dots, dotpools and events.
func NewFakeDynamic() *dynamicfake.FakeDynamicClient {
	events := corev1.SchemeGroupVersion.WithResource("events")
	c := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		v1alpha1.DotsResource: "DotList", v1alpha1.DotPoolsResource: "DotPoolList", events: "EventList",
	})
	api := &fakeAPI{
		objects:   map[schema.GroupVersionResource]map[types.NamespacedName]*unstructured.Unstructured{},
		hasStatus: map[schema.GroupVersionResource]bool{v1alpha1.DotsResource: true, v1alpha1.DotPoolsResource: true},
	}
	c.PrependReactor("*", "*", api.react)
	return c
}

type fakeAPI struct {
	mu        sync.Mutex
	version   int64
	objects   map[schema.GroupVersionResource]map[types.NamespacedName]*unstructured.Unstructured
	hasStatus map[schema.GroupVersionResource]bool // resources with a status subresource
}

func (f *fakeAPI) react(action clienttesting.Action) (bool, runtime.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	gvr := action.GetResource()
	if f.objects[gvr] == nil {
		f.objects[gvr] = map[types.NamespacedName]*unstructured.Unstructured{}
	}
	objs := f.objects[gvr]
	// By verb: the action interfaces overlap (a delete is also a get).
	ns := action.GetNamespace()
	switch action.GetVerb() {
	case "get":
		name := action.(clienttesting.GetAction).GetName()
		if o, ok := objs[types.NamespacedName{Namespace: ns, Name: name}]; ok {
			return true, o.DeepCopy(), nil
		}
		return true, nil, apierrors.NewNotFound(gvr.GroupResource(), name)
	case "list":
		return true, f.list(objs, ns), nil
	case "delete":
		name := action.(clienttesting.DeleteAction).GetName()
		key := types.NamespacedName{Namespace: ns, Name: name}
		if _, ok := objs[key]; !ok {
			return true, nil, apierrors.NewNotFound(gvr.GroupResource(), name)
		}
		delete(objs, key)
		return true, nil, nil
	case "delete-collection":
		for key := range objs {
			if key.Namespace == ns {
				delete(objs, key)
			}
		}
		return true, nil, nil
	case "create":
		o, err := f.create(gvr, objs, action.(clienttesting.CreateAction).GetObject())
		return true, o, err
	case "update":
		o, err := f.update(gvr, objs, action.(clienttesting.UpdateAction).GetObject(), action.GetSubresource())
		return true, o, err
	}
	return true, nil, fmt.Errorf("the fake API server does not serve %s on %s", action.GetVerb(), gvr)
}

func (f *fakeAPI) list(objs map[types.NamespacedName]*unstructured.Unstructured, ns string) *unstructured.UnstructuredList {
	keys := make([]types.NamespacedName, 0, len(objs))
	for k := range objs {
		if ns == "" || k.Namespace == ns {
			keys = append(keys, k)
		}
	}
	// The API server lists in key order: namespace, then name.
	slices.SortFunc(keys, func(a, b types.NamespacedName) int {
		if a.Namespace != b.Namespace {
			return compare(a.Namespace, b.Namespace)
		}
		return compare(a.Name, b.Name)
	})
	out := &unstructured.UnstructuredList{Object: map[string]any{}}
	out.SetResourceVersion(strconv.FormatInt(f.version, 10))
	for _, k := range keys {
		out.Items = append(out.Items, *objs[k].DeepCopy())
	}
	return out
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (f *fakeAPI) next() string {
	f.version++
	return strconv.FormatInt(f.version, 10)
}

func (f *fakeAPI) create(gvr schema.GroupVersionResource, objs map[types.NamespacedName]*unstructured.Unstructured, in runtime.Object) (runtime.Object, error) {
	o := in.(*unstructured.Unstructured).DeepCopy()
	if o.GetName() == "" && o.GetGenerateName() != "" {
		o.SetName(o.GetGenerateName() + strconv.FormatInt(f.version+1, 10))
	}
	key := types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
	if _, ok := objs[key]; ok {
		return nil, apierrors.NewAlreadyExists(gvr.GroupResource(), o.GetName())
	}
	if f.hasStatus[gvr] {
		delete(o.Object, "status")
	}
	o.SetUID(types.UID("uid-" + strconv.FormatInt(f.version+1, 10)))
	o.SetCreationTimestamp(metav1.Now())
	o.SetResourceVersion(f.next())
	objs[key] = o
	return o.DeepCopy(), nil
}

func (f *fakeAPI) update(gvr schema.GroupVersionResource, objs map[types.NamespacedName]*unstructured.Unstructured, in runtime.Object, sub string) (runtime.Object, error) {
	o := in.(*unstructured.Unstructured)
	key := types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
	cur, ok := objs[key]
	switch {
	case !ok:
		return nil, apierrors.NewNotFound(gvr.GroupResource(), o.GetName())
	case sub != "" && (sub != "status" || !f.hasStatus[gvr]):
		return nil, apierrors.NewNotFound(gvr.GroupResource(), o.GetName()+"/"+sub)
	case o.GetResourceVersion() == "":
		// Custom resources take no unconditional update.
		return nil, apierrors.NewBadRequest("metadata.resourceVersion: must be specified for an update")
	case o.GetResourceVersion() != cur.GetResourceVersion():
		return nil, apierrors.NewConflict(gvr.GroupResource(), o.GetName(), fmt.Errorf("the object has been modified"))
	}
	next := cur.DeepCopy()
	switch {
	case sub == "status":
		next.Object["status"] = runtime.DeepCopyJSONValue(o.Object["status"])
	default:
		for field, v := range o.Object {
			if field != "metadata" && !(field == "status" && f.hasStatus[gvr]) {
				next.Object[field] = runtime.DeepCopyJSONValue(v)
			}
		}
		next.SetLabels(o.GetLabels())
		next.SetAnnotations(o.GetAnnotations())
	}
	if reflect.DeepEqual(next.Object, cur.Object) {
		return cur.DeepCopy(), nil
	}
	next.SetResourceVersion(f.next())
	objs[key] = next
	return next.DeepCopy(), nil
}
