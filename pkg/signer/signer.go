// Package signer is the controller's side of zfsd certificates: it
// approves and signs the CertificateSigningRequests for pki.SignerName
// with the cluster CA, which only the controller holds, once it has proved
// which node plugin asks, and denies the rest.
//
// The proof rests on what the API server writes into a request, never on
// what the requester says: spec.username, spec.uid, spec.groups and
// spec.extra are set from the credential that created the request. A node
// plugin's pod authenticates with its ServiceAccount token, which the
// kubelet projects bound to the pod, and the API server puts the pod's
// name and UID (authentication.kubernetes.io/pod-name, pod-uid) and its
// node (node-name) in the request's extra. So a request is signed only
// when it was created by the node plugin's ServiceAccount through a token
// bound to a pod that exists with that UID, runs that ServiceAccount, is
// controlled by the node plugin's DaemonSet and is scheduled on node N; and
// the request asks for exactly the common name "node:N", with no subject
// but that and no names but N's addresses.
package signer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

// Config is what the signer trusts and issues.
type Config struct {
	Client kubernetes.Interface
	CA     *pki.CA
	// Namespace, ServiceAccount and DaemonSet name the node plugin: its
	// pods are in Namespace, run as ServiceAccount and are controlled by
	// DaemonSet.
	Namespace, ServiceAccount, DaemonSet string
	// Validity is the longest a certificate lasts; a request asking for
	// less (spec.expirationSeconds) gets less.
	Validity time.Duration
}

// Signer approves, denies and signs.
type Signer struct{ cfg Config }

// New returns a signer.
func New(cfg Config) *Signer { return &Signer{cfg: cfg} }

// Run handles every request for pki.SignerName, as it comes and again on
// each resync, until ctx ends. A request is handled by one worker at a
// time; one that failed for a passing reason (the API unreachable) is
// retried with backoff.
func (s *Signer) Run(ctx context.Context, resync time.Duration) {
	f := informers.NewSharedInformerFactoryWithOptions(s.cfg.Client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.signerName", pki.SignerName).String()
		}))
	inf := f.Certificates().V1().CertificateSigningRequests()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	enqueue := func(obj any) {
		if csr, ok := obj.(*certv1.CertificateSigningRequest); ok {
			q.Add(csr.Name)
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }})
	f.Start(ctx.Done())
	go func() { <-ctx.Done(); q.ShutDown() }()
	f.WaitForCacheSync(ctx.Done())
	klog.InfoS("signing zfsd certificates", "signer", pki.SignerName, "validity", s.cfg.Validity)
	for {
		name, quit := q.Get()
		if quit {
			f.Shutdown()
			return
		}
		csr, err := inf.Lister().Get(name)
		if err == nil {
			err = s.Handle(ctx, csr)
		} else if apierrors.IsNotFound(err) {
			err = nil
		}
		if err != nil {
			klog.ErrorS(err, "handling a CertificateSigningRequest; retrying", "csr", name)
			q.AddRateLimited(name)
		} else {
			q.Forget(name)
		}
		q.Done(name)
	}
}

// denial is a request that must not be signed, and why.
type denial struct{ reason, message string }

func (d *denial) Error() string { return d.reason + ": " + d.message }

func deny(reason, format string, args ...any) error {
	return &denial{reason: reason, message: fmt.Sprintf(format, args...)}
}

// Handle approves and signs csr if it proves its node, denies it if it
// does not (or marks it Failed if someone else approved it), and leaves
// alone a request already decided or for another signer. An error is a
// passing failure, to retry.
func (s *Signer) Handle(ctx context.Context, csr *certv1.CertificateSigningRequest) error {
	if csr.Spec.SignerName != pki.SignerName || len(csr.Status.Certificate) > 0 ||
		has(csr, certv1.CertificateDenied) || has(csr, certv1.CertificateFailed) {
		return nil
	}
	csr = csr.DeepCopy() // the informer's copy is shared
	req, proof, err := s.Check(ctx, csr)
	var d *denial
	if errors.As(err, &d) {
		klog.InfoS("refusing a zfsd certificate", "csr", csr.Name, "requester", csr.Spec.Username, "reason", d.reason, "message", d.message)
		if has(csr, certv1.CertificateApproved) {
			return s.setCondition(ctx, csr, certv1.CertificateFailed, d.reason, d.message)
		}
		return s.setApproval(ctx, csr, certv1.CertificateDenied, d.reason, d.message)
	}
	if err != nil {
		return err
	}
	if !has(csr, certv1.CertificateApproved) {
		csr.Status.Conditions = append(csr.Status.Conditions, condition(certv1.CertificateApproved, "NodePluginVerified", proof))
		if csr, err = s.cfg.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("approving CertificateSigningRequest %s (%s): %w", csr.Name, proof, err)
		}
	}
	validity := s.cfg.Validity
	if e := csr.Spec.ExpirationSeconds; e != nil && time.Duration(*e)*time.Second < validity {
		validity = time.Duration(*e) * time.Second
	}
	cert, err := s.cfg.CA.SignRequest(req, validity)
	if err != nil {
		return fmt.Errorf("signing CertificateSigningRequest %s: %w", csr.Name, err)
	}
	csr.Status.Certificate = append(cert, s.cfg.CA.CertPEM...)
	if _, err := s.cfg.Client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("writing the certificate of CertificateSigningRequest %s: %w", csr.Name, err)
	}
	klog.InfoS("signed a zfsd certificate", "csr", csr.Name, "cn", req.Subject.CommonName, "proof", proof, "validity", validity)
	return nil
}

// Check proves who asks: it returns the parsed request and how it was
// proved, a denial, or a passing error.
func (s *Signer) Check(ctx context.Context, csr *certv1.CertificateSigningRequest) (*x509.CertificateRequest, string, error) {
	if want := "system:serviceaccount:" + s.cfg.Namespace + ":" + s.cfg.ServiceAccount; csr.Spec.Username != want {
		return nil, "", deny("NotTheNodePlugin", "created by %q; only %s may ask", csr.Spec.Username, want)
	}
	podName, ok1 := one(csr.Spec.Extra, podNameKey)
	podUID, ok2 := one(csr.Spec.Extra, podUIDKey)
	if !ok1 || !ok2 {
		return nil, "", deny("NoBoundPod", "created with a token bound to no pod; the node plugin's pod token names its pod")
	}
	req, err := pki.ParseRequest(csr.Spec.Request)
	if err != nil {
		return nil, "", deny("BadRequest", "%v", err)
	}
	for _, u := range csr.Spec.Usages {
		if !slices.Contains(allowedUsages, u) {
			return nil, "", deny("BadUsage", "usage %q; a zfsd certificate serves and dials only", u)
		}
	}
	pod, err := s.cfg.Client.CoreV1().Pods(s.cfg.Namespace).Get(ctx, podName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", deny("PodGone", "pod %s/%s no longer exists", s.cfg.Namespace, podName)
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading pod %s/%s of CertificateSigningRequest %s: %w", s.cfg.Namespace, podName, csr.Name, err)
	}
	if string(pod.UID) != podUID {
		return nil, "", deny("PodGone", "pod %s/%s is another pod (UID %s) than the requester's (UID %s)", s.cfg.Namespace, podName, pod.UID, podUID)
	}
	if pod.Spec.ServiceAccountName != s.cfg.ServiceAccount {
		return nil, "", deny("NotTheNodePlugin", "pod %s runs as %q", podName, pod.Spec.ServiceAccountName)
	}
	if ref := metav1.GetControllerOf(pod); ref == nil || ref.APIVersion != "apps/v1" || ref.Kind != "DaemonSet" || ref.Name != s.cfg.DaemonSet {
		return nil, "", deny("NotTheNodePlugin", "pod %s is not controlled by DaemonSet %s", podName, s.cfg.DaemonSet)
	}
	node := pod.Spec.NodeName
	if node == "" {
		return nil, "", deny("PodNotScheduled", "pod %s is on no node", podName)
	}
	if n, ok := one(csr.Spec.Extra, nodeNameKey); ok && n != node {
		return nil, "", deny("WrongNode", "the requester's token names node %s, its pod %s is on node %s", n, podName, node)
	}
	if want := pki.NodeName(node); req.Subject.CommonName != want || len(req.Subject.Names) != 1 {
		return nil, "", deny("WrongNode", "asks for subject %q; pod %s on node %s may ask only for CN=%s", req.Subject.String(), podName, node, want)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return nil, "", deny("BadName", "asks for e-mail addresses or URIs; a zfsd certificate names only its node's addresses")
	}
	if err := s.checkAddresses(ctx, node, req); err != nil {
		return nil, "", err
	}
	return req, fmt.Sprintf("pod %s (UID %s) of DaemonSet %s on node %s", podName, podUID, s.cfg.DaemonSet, node), nil
}

// checkAddresses allows only the node's own addresses, as its Node object
// lists them.
func (s *Signer) checkAddresses(ctx context.Context, node string, req *x509.CertificateRequest) error {
	n, err := s.cfg.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return deny("WrongNode", "node %s does not exist", node)
	}
	if err != nil {
		return fmt.Errorf("reading node %s: %w", node, err)
	}
	var ips []net.IP
	var dns []string
	for _, a := range n.Status.Addresses {
		switch a.Type {
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			if ip := net.ParseIP(a.Address); ip != nil {
				ips = append(ips, ip)
			}
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			dns = append(dns, a.Address)
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(ips, ip.Equal) {
			return deny("BadName", "asks for IP %s, which is not an address of node %s", ip, node)
		}
	}
	for _, d := range req.DNSNames {
		if !slices.Contains(dns, d) {
			return deny("BadName", "asks for DNS name %s, which is not an address of node %s", d, node)
		}
	}
	return nil
}

// The keys of a request's extra under which the API server records the
// pod and node a ServiceAccount token is bound to (k8s.io/apiserver's
// serviceaccount package, not imported for three strings).
const (
	podNameKey  = "authentication.kubernetes.io/pod-name"
	podUIDKey   = "authentication.kubernetes.io/pod-uid"
	nodeNameKey = "authentication.kubernetes.io/node-name"
)

var allowedUsages = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment,
	certv1.UsageServerAuth, certv1.UsageClientAuth}

func one(extra map[string]certv1.ExtraValue, key string) (string, bool) {
	v := extra[key]
	if len(v) != 1 || v[0] == "" {
		return "", false
	}
	return v[0], true
}

func has(csr *certv1.CertificateSigningRequest, t certv1.RequestConditionType) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func condition(t certv1.RequestConditionType, reason, message string) certv1.CertificateSigningRequestCondition {
	now := metav1.Now()
	return certv1.CertificateSigningRequestCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message,
		LastUpdateTime: now, LastTransitionTime: now}
}

// setApproval approves or denies, through the approval subresource.
func (s *Signer) setApproval(ctx context.Context, csr *certv1.CertificateSigningRequest, t certv1.RequestConditionType, reason, message string) error {
	csr.Status.Conditions = append(csr.Status.Conditions, condition(t, reason, message))
	if _, err := s.cfg.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("%s CertificateSigningRequest %s: %w", t, csr.Name, err)
	}
	return nil
}

// setCondition marks a request the signer will not sign, through the
// status subresource.
func (s *Signer) setCondition(ctx context.Context, csr *certv1.CertificateSigningRequest, t certv1.RequestConditionType, reason, message string) error {
	csr.Status.Conditions = append(csr.Status.Conditions, condition(t, reason, message))
	if _, err := s.cfg.Client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("marking CertificateSigningRequest %s %s: %w", csr.Name, t, err)
	}
	return nil
}
