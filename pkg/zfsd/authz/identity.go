package authz

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/pki"
)

// Role is what a caller is to this zfsd.
type Role int

const (
	// Local is a process on this host, over zfsd's unix socket.
	Local Role = iota + 1
	// Controller is dotmesh-controller: certificate CN pki.ControllerName.
	Controller
	// Node is a node plugin: certificate CN pki.NodeName(node).
	Node
)

// Identity is who makes a call.
type Identity struct {
	Role Role
	Node string // the node's name, for Node
}

func (id Identity) String() string {
	switch id.Role {
	case Local:
		return "local"
	case Controller:
		return pki.ControllerName
	case Node:
		return pki.NodeName(id.Node)
	}
	return "unknown"
}

// FromContext is the identity of the peer that made the call in ctx.
//
// A peer on a unix socket is the local host and trusted with every call.
// zfsd serves a unix socket (--zfsd-endpoint) only for a dotmesh-controller
// on the same host; the socket carries no TLS, so there is no certificate
// to ask, and the socket file's permissions are the boundary. Whoever can
// open that file is already on this host with the plugin's folder open to
// it, and could reach the pool's devices and zfs itself as easily.
//
// Over TCP the identity is the common name of the leaf of the chain TLS
// verified against the cluster CA, never of a certificate only presented.
// A peer without one is Unauthenticated; a verified certificate with a
// name that is neither the controller's nor a node's is PermissionDenied.
func FromContext(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return Identity{}, status.Error(codes.Unauthenticated, "zfsd: the call has no peer")
	}
	// By type, not by p.Addr.Network(): an unnamed unix peer's address
	// may be a nil *net.UnixAddr.
	if _, ok := p.Addr.(*net.UnixAddr); ok {
		return Identity{Role: Local}, nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, status.Errorf(codes.Unauthenticated, "zfsd: peer %s presented no verified certificate", p.Addr)
	}
	return parseName(info.State.VerifiedChains[0][0].Subject.CommonName)
}

// parseName maps a certificate's common name (pki.ControllerName or
// pki.NodeName) to an identity.
func parseName(cn string) (Identity, error) {
	if cn == pki.ControllerName {
		return Identity{Role: Controller}, nil
	}
	if node, ok := strings.CutPrefix(cn, pki.NodeName("")); ok && node != "" {
		return Identity{Role: Node, Node: node}, nil
	}
	return Identity{}, status.Errorf(codes.PermissionDenied, "zfsd: certificate %q names neither the controller nor a node", cn)
}
