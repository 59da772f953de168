package pki

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// EnsureCASecret returns the cluster CA kept in a Secret, creating it on
// first use. Only the controller calls it: its key signs every zfsd
// certificate, so no other ServiceAccount may read the Secret. Two
// controllers racing both end with the one that was stored.
func EnsureCASecret(ctx context.Context, cs kubernetes.Interface, namespace, name string) (*CA, error) {
	s, err := cs.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		ca, cerr := NewCA("dotmesh-csi cluster CA")
		if cerr != nil {
			return nil, cerr
		}
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"ca.crt": ca.CertPEM, "ca.key": ca.KeyPEM}}
		_, err = cs.CoreV1().Secrets(namespace).Create(ctx, sec, metav1.CreateOptions{})
		if err == nil {
			klog.InfoS("created cluster CA", "secret", namespace+"/"+name)
			return ca, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating CA secret %s/%s: %w", namespace, name, err)
		}
		s, err = cs.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("reading CA secret %s/%s: %w", namespace, name, err)
	}
	return ParseCA(s.Data["ca.crt"], s.Data["ca.key"])
}
