package operator

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// poolTermination is long enough for the node plugin to export a busy pool
// before the kubelet gives up on the pod and detaches the disk under it.
const poolTermination = 120

// backingPVCObject is a new backing PVC, assigned to node.
func backingPVCObject(namespace, name, node string, cfg Config) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: namespace,
			Labels: map[string]string{
				LabelPartOf: PartOf,
				LabelRole:   RoleBacking,
				LabelAuto:   "true",
			},
			Annotations: map[string]string{AnnotationNode: node},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeMode:  new(corev1.PersistentVolumeFilesystem),
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: cfg.Size},
			},
		},
	}
	// Left nil, not "": an empty class name asks for no class at all,
	// where nil asks for the cluster's default.
	if cfg.StorageClass != "" {
		pvc.Spec.StorageClassName = new(cfg.StorageClass)
	}
	return pvc
}

// poolPodObject is the pod that holds backing PVC pvc on node. It belongs
// to no controller: the operator alone makes and deletes pool pods, and a
// garbage collector acting on an owner would move pools behind its back.
func poolPodObject(namespace, pvc, node, image string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      PoolPodName(pvc, node),
			Namespace: namespace,
			Labels: map[string]string{
				LabelPartOf: PartOf,
				LabelRole:   RolePool,
				LabelPool:   pvc,
			},
			Annotations: map[string]string{AnnotationNode: node},
		},
		Spec: corev1.PodSpec{
			// Node affinity on metadata.name rather than spec.nodeName, as
			// DaemonSets do: the scheduler then places the pod, and so
			// binds a WaitForFirstConsumer volume in the node's zone.
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
					NodeSelectorTerms: []corev1.NodeSelectorTerm{{
						MatchFields: []corev1.NodeSelectorRequirement{{
							Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node},
						}},
					}},
				},
			}},
			// The pool must stay on a tainted or draining node as long as
			// the node plugin does.
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			PriorityClassName:             "system-node-critical",
			TerminationGracePeriodSeconds: new(int64(poolTermination)),
			// The holder only waits on a file; it has no use for the API.
			AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{
				Name:            PoolContainer,
				Image:           image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         PoolCommand(),
				VolumeMounts:    []corev1.VolumeMount{{Name: PoolContainer, MountPath: PoolMountPath}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("1m"),
					corev1.ResourceMemory: resource.MustParse("16Mi"),
				}},
			}},
			Volumes: []corev1.Volume{{
				Name: PoolContainer,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
					ClaimName: pvc,
				}},
			}},
		},
	}
}
