package driver

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/errcode"
)

// toStatus delegates to pkg/errcode, the one place where errors
// become gRPC codes.
func toStatus(err error) error { return errcode.ToStatus(err) }

func invalidf(format string, a ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, a...))
}

func notFoundf(format string, a ...any) error {
	return status.Error(codes.NotFound, fmt.Sprintf(format, a...))
}

func abortedf(format string, a ...any) error {
	return status.Error(codes.Aborted, fmt.Sprintf(format, a...))
}

func statusf(c codes.Code, format string, a ...any) error {
	return status.Error(c, fmt.Sprintf(format, a...))
}

// Codes used by name in validation, kept short for readability.
const (
	outOfRange  = codes.OutOfRange
	unavailable = codes.Unavailable
)

// isNotFound reports whether err means "no such object", whatever its form.
func isNotFound(err error) bool {
	return status.Code(toStatus(err)) == codes.NotFound
}
