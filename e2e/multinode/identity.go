package multinode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/dotmesh-io/dotmesh-csi/e2e/procs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

// The node plugin's ServiceAccount and DaemonSet, as deploy/ names them.
const (
	NodeServiceAccount = "dotmesh-node"
	NodeDaemonSet      = "dotmesh-node"
)

// applyRBAC installs deploy/'s ServiceAccounts and roles, so processes of
// the harness run with the rights a real install gives them.
func (h *Harness) applyRBAC() {
	base := filepath.Join(procs.Root(), "deploy", "base")
	if out, err := h.Kubectl(h.ctx(), "apply", "-f", filepath.Join(base, "rbac-node.yaml"), "-f", filepath.Join(base, "rbac-controller.yaml")); err != nil {
		h.t.Fatalf("applying deploy/'s RBAC: %v\n%s", err, out)
	}
}

// PluginConfig is how node n's plugin authenticates, as the plugin's pod
// of a real install does: with a token of the node plugin's
// ServiceAccount bound to a Pod of the DaemonSet on n. A harness without
// kubelets makes those objects itself (the Node with n's address, the
// DaemonSet, which nothing runs, and a Pod on n that never starts), so the
// controller's signer sees what it would see in a cluster. The kubeconfig
// is written once per node and reused across plugin restarts.
func (n *Node) PluginConfig() (kubeconfig string, cfg *rest.Config) {
	h, t := n.h, n.h.t
	t.Helper()
	kubeconfig = filepath.Join(n.Dir, "plugin.kubeconfig")
	if n.pluginToken == "" {
		n.pluginToken = n.boundToken()
		h.writeTokenKubeconfig(kubeconfig, NodeServiceAccount+"@"+n.Name, n.pluginToken)
	}
	cfg = rest.CopyConfig(h.Rest)
	cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData = nil, nil
	cfg.TLSClientConfig.CertFile, cfg.TLSClientConfig.KeyFile = "", ""
	cfg.BearerToken = n.pluginToken
	return kubeconfig, cfg
}

// boundToken makes node n's plugin Pod (and the Node and DaemonSet it
// needs) and returns a token bound to it.
func (n *Node) boundToken() string {
	h, t := n.h, n.h.t
	ctx := h.ctx()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP}, {Type: corev1.NodeHostName, Address: n.Name}}}}
	if _, err := h.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating Node %s: %v", n.Name, err)
	}
	labels := map[string]string{"app.kubernetes.io/name": "dotmesh-csi", "app.kubernetes.io/component": "node"}
	ds, err := h.Client.AppsV1().DaemonSets(Namespace).Get(ctx, NodeDaemonSet, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		ds, err = h.Client.AppsV1().DaemonSets(Namespace).Create(ctx, &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: NodeDaemonSet, Namespace: Namespace},
			Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{ServiceAccountName: NodeServiceAccount, Containers: []corev1.Container{{Name: "node", Image: "none"}}}}},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("the node plugin's DaemonSet: %v", err)
	}
	ctl, no := true, false
	pod, err := h.Client.CoreV1().Pods(Namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: NodeDaemonSet + "-" + n.Name, Namespace: Namespace, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: &ctl}}},
		Spec: corev1.PodSpec{NodeName: n.Name, ServiceAccountName: NodeServiceAccount, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "node", Image: "none"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("%s: the node plugin's Pod: %v", n.Name, err)
	}
	return h.podToken(ctx, NodeServiceAccount, pod)
}

// podToken is a token of the ServiceAccount sa bound to pod, as the
// kubelet projects into a pod.
func (h *Harness) podToken(ctx context.Context, sa string, pod *corev1.Pod) string {
	exp := int64(12 * 3600)
	tr, err := h.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		ExpirationSeconds: &exp, BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}},
		metav1.CreateOptions{})
	if err != nil {
		h.t.Fatalf("a token of %s bound to pod %s: %v", sa, pod.Name, err)
	}
	return tr.Status.Token
}

// writeTokenKubeconfig writes a kubeconfig for the API server's address on
// the harness bridge, authenticating with a bearer token.
func (h *Harness) writeTokenKubeconfig(path, user, token string) {
	h.writeKubeconfigWith(path, user, h.ca.CertPEM, "token: "+token)
}

// ClusterCA is the zfsd CA the controller keeps in its Secret, read as
// admin.
func (h *Harness) ClusterCA(ctx context.Context) (*pki.CA, error) {
	s, err := h.Client.CoreV1().Secrets(Namespace).Get(ctx, "dotmesh-ca", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return pki.ParseCA(s.Data["ca.crt"], s.Data["ca.key"])
}

// ZfsdCertificate is the certificate node n's zfsd serves now, checked
// against the cluster CA.
func (n *Node) ZfsdCertificate(ctx context.Context) (*x509.Certificate, error) {
	ca, err := n.h.ClusterCA(ctx)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	raw, err := dialIn(n.h.CPNetns)(ctx, "tcp", n.IP+":7455")
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	// With TLS 1.3 the client's handshake ends before the server judges
	// the client, so no client certificate is needed to see the server's.
	c := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: n.IP})
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("%s: zfsd's TLS handshake: %w", n.Name, err)
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// WaitZfsdCertificate waits until node n's zfsd serves a certificate from
// the cluster CA.
func (n *Node) WaitZfsdCertificate(limit time.Duration) {
	n.h.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.ZfsdCertificate(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.h.t.Fatalf("%s: no zfsd certificate within %s: %v", n.Name, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
