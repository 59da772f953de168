//go:build zfs

package multinode

import (
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// access is one request a ServiceAccount might make.
type access struct {
	verb, group, resource, sub, name, namespace string
}

func (a access) String() string {
	s := a.verb + " " + a.resource
	if a.sub != "" {
		s += "/" + a.sub
	}
	if a.group != "" {
		s += "." + a.group
	}
	if a.name != "" {
		s += " " + a.name
	}
	if a.namespace != "" {
		s += " in " + a.namespace
	}
	return s
}

const ns = Namespace

// What each ServiceAccount's code needs, and what it must never have.
// The operator runs inside the controller, under its ServiceAccount.
var rbacTable = map[string]struct{ allowed, forbidden []access }{
	// Every other ServiceAccount, here the namespace's default one, whose
	// groups every ServiceAccount shares: nothing of the CA.
	"default": {
		forbidden: []access{
			{"get", "", "secrets", "", "dotmesh-ca", ns},
			{"list", "", "secrets", "", "", ns},
			{"watch", "", "secrets", "", "", ns},
			{"create", "", "secrets", "", "", ns},
		},
	},
	"dotmesh-node": {
		allowed: []access{
			{"create", "certificates.k8s.io", "certificatesigningrequests", "", "", ""},
			{"get", "certificates.k8s.io", "certificatesigningrequests", "", "x", ""},
			{"get", "dotmesh.io", "dotpools", "", "", ""},
			{"update", "dotmesh.io", "dotpools", "status", "", ""},
			{"update", "dotmesh.io", "dots", "status", "", ""},
			{"create", "", "events", "", "", "default"},
			{"list", "", "pods", "", "", ns},
			{"get", "", "persistentvolumeclaims", "", "", ns},
		},
		forbidden: []access{
			{"get", "", "secrets", "", "dotmesh-ca", ns},
			{"list", "", "secrets", "", "", ns},
			{"watch", "", "secrets", "", "", ns},
			{"create", "", "secrets", "", "", ns},
			{"update", "", "secrets", "", "dotmesh-ca", ns},
			{"delete", "", "nodes", "", "", ""},
			{"update", "", "nodes", "", "", ""},
			{"create", "", "pods", "", "", ns},
			{"delete", "", "pods", "", "", ns},
			{"create", "", "pods", "exec", "", ns},
			{"create", "", "serviceaccounts", "token", "dotmesh-controller", ns},
			{"update", "certificates.k8s.io", "certificatesigningrequests", "approval", "", ""},
			{"update", "certificates.k8s.io", "certificatesigningrequests", "status", "", ""},
			{"approve", "certificates.k8s.io", "signers", "", "dotmesh.io/zfsd", ""},
			{"sign", "certificates.k8s.io", "signers", "", "dotmesh.io/zfsd", ""},
			{"list", "certificates.k8s.io", "certificatesigningrequests", "", "", ""},
			{"delete", "certificates.k8s.io", "certificatesigningrequests", "", "", ""},
			{"impersonate", "", "users", "", "", ""},
			{"impersonate", "", "serviceaccounts", "", "dotmesh-controller", ns},
			{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""},
			{"escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", ""},
			{"create", "authentication.k8s.io", "tokenreviews", "", "", ""},
		},
	},
	"dotmesh-controller": {
		allowed: []access{
			{"get", "", "secrets", "", "dotmesh-ca", ns},
			{"create", "", "secrets", "", "", ns},
			{"list", "certificates.k8s.io", "certificatesigningrequests", "", "", ""},
			{"watch", "certificates.k8s.io", "certificatesigningrequests", "", "", ""},
			{"update", "certificates.k8s.io", "certificatesigningrequests", "approval", "", ""},
			{"update", "certificates.k8s.io", "certificatesigningrequests", "status", "", ""},
			{"approve", "certificates.k8s.io", "signers", "", "dotmesh.io/zfsd", ""},
			{"sign", "certificates.k8s.io", "signers", "", "dotmesh.io/zfsd", ""},
			{"get", "", "pods", "", "", ns},
			{"get", "", "nodes", "", "", ""},
			{"update", "dotmesh.io", "dots", "status", "", ""},
			{"get", "coordination.k8s.io", "leases", "", "dotmesh-operator", ns},
			{"delete", "storage.k8s.io", "volumeattachments", "", "", ""},
		},
		forbidden: []access{
			{"get", "", "secrets", "", "other", ns},
			{"list", "", "secrets", "", "", ns},
			{"update", "", "secrets", "", "dotmesh-ca", ns},
			{"delete", "", "secrets", "", "dotmesh-ca", ns},
			{"get", "", "secrets", "", "dotmesh-ca", "kube-system"},
			{"delete", "", "nodes", "", "", ""},
			{"update", "", "nodes", "", "", ""},
			{"create", "", "pods", "exec", "", ns},
			{"delete", "", "persistentvolumeclaims", "", "", ns},
			{"create", "certificates.k8s.io", "certificatesigningrequests", "", "", ""},
			{"approve", "certificates.k8s.io", "signers", "", "kubernetes.io/kube-apiserver-client", ""},
			{"sign", "certificates.k8s.io", "signers", "", "kubernetes.io/kube-apiserver-client", ""},
			{"approve", "certificates.k8s.io", "signers", "", "kubernetes.io/kubelet-serving", ""},
			{"impersonate", "", "users", "", "", ""},
			{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""},
			{"create", "", "serviceaccounts", "token", "dotmesh-node", ns},
		},
	},
}

// deploy/'s roles, applied to a real API server, give each ServiceAccount
// what its code uses and refuse the rest of the table.
func TestRBACLeastPrivilege(t *testing.T) {
	h := New(t, Options{})
	ctx := ctxT(t, 2*time.Minute)
	for sa, tc := range rbacTable {
		check := func(a access, want bool) {
			r, err := h.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + ns + ":" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
				ResourceAttributes: &authzv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource,
					Subresource: a.sub, Name: a.name, Namespace: a.namespace},
			}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("%s: %s: %v", sa, a, err)
			}
			if r.Status.Allowed != want {
				t.Errorf("%s may %s: %v, want %v (%s)", sa, a, r.Status.Allowed, want, r.Status.Reason)
			}
		}
		for _, a := range tc.allowed {
			check(a, true)
		}
		for _, a := range tc.forbidden {
			check(a, false)
		}
	}
}
