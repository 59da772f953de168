//go:build zfs

package k8s

import (
	"fmt"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkKube measures what a user waits for, each against a baseline
// taken in the same run on the same cluster:
//   - a claim and its pod created together until the pod runs, against a
//     pod with an emptyDir (scheduling, sandbox and container start, no
//     storage), p50 of 20;
//   - 50 claims created at once until all are Bound, against one claim
//     alone (p50 of 5), so the ratio shows how provisioning scales.
//
// Run with -benchtime=1x: one pass is the measurement (make bench).
func BenchmarkKube(b *testing.B) {
	e := install(b)
	const runs = 20
	var base, dot []time.Duration
	for i := range runs {
		base = append(base, e.timePod(fmt.Sprintf("empty-%d", i), ""))
		claim := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		e.pvc(claim, storageClass, "64Mi", nil)
		dot = append(dot, e.timePodSince(fmt.Sprintf("dot-%d", i), claim, start))
		e.deletePVC(claim)
	}

	e.storageClass("bench-immediate", nil, storagev1.VolumeBindingImmediate)
	var one []time.Duration
	for i := range 5 {
		start := time.Now()
		name := fmt.Sprintf("single-%d", i)
		e.pvc(name, "bench-immediate", "16Mi", nil)
		e.waitBound([]string{name})
		one = append(one, time.Since(start))
		e.deletePVC(name)
	}
	var names []string
	start := time.Now()
	for i := range 50 {
		names = append(names, fmt.Sprintf("many-%d", i))
		e.pvc(names[i], "bench-immediate", "16Mi", nil)
	}
	e.waitProvisioned(names)
	provisioned := time.Since(start)
	e.waitBound(names)
	many := time.Since(start)

	p50 := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	fmt.Printf("\n%-52s %12s %12s %8s\n", "Kubernetes (one node, zfs-fuse)", "dotmesh", "baseline", "ratio")
	fmt.Printf("%-52s %12s %12s %7.2fx\n", "PVC created -> Pod Running, p50 of 20 (vs emptyDir)",
		p50(dot).Round(time.Millisecond), p50(base).Round(time.Millisecond), float64(p50(dot))/float64(p50(base)))
	fmt.Printf("%-52s %12s %12s %7.2fx\n", "50 PVCs at once -> all Bound (vs one PVC, p50 of 5)",
		many.Round(time.Millisecond), p50(one).Round(time.Millisecond), float64(many)/float64(p50(one)))
	// The rest of "Bound" is kube-controller-manager's binder, which at its
	// default 20 requests/s takes a few seconds to bind 50 claims.
	fmt.Printf("%-52s %12s\n", "  of which until the driver made all 50 PVs", provisioned.Round(time.Millisecond))
	b.ReportMetric(float64(p50(dot).Milliseconds()), "ms/pvc-to-running")
	b.ReportMetric(float64(many.Milliseconds()), "ms/50-pvcs-bound")
}

// timePod runs a pod (with claim, or an emptyDir when claim is "") until
// Running and deletes it again.
func (e *env) timePod(name, claim string) time.Duration {
	return e.timePodSince(name, claim, time.Now())
}

func (e *env) timePodSince(name, claim string, start time.Time) time.Duration {
	e.t.Helper()
	e.pod(name, claim, "")
	e.waitRunning(name, 2*time.Minute)
	took := time.Since(start)
	e.deletePod(name)
	return took
}

// waitProvisioned waits until every named claim has a PV made for it.
func (e *env) waitProvisioned(names []string) {
	e.t.Helper()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	e.eventually(fmt.Sprintf("%d PVs made", len(names)), 5*time.Minute, func() (bool, string) {
		list, err := e.cs.CoreV1().PersistentVolumes().List(e.ctx(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, pv := range list.Items {
			if ref := pv.Spec.ClaimRef; ref != nil && ref.Namespace == e.ns && want[ref.Name] {
				n++
			}
		}
		return n == len(names), fmt.Sprintf("%d of %d PVs", n, len(names))
	})
}

func (e *env) waitBound(names []string) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("%d claims Bound", len(names)), 5*time.Minute, func() (bool, string) {
		list, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).List(e.ctx(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		bound := map[string]bool{}
		for _, c := range list.Items {
			bound[c.Name] = c.Status.Phase == corev1.ClaimBound
		}
		n := 0
		for _, name := range names {
			if bound[name] {
				n++
			}
		}
		return n == len(names), fmt.Sprintf("%d of %d Bound", n, len(names))
	})
}
