// Package errcode is the one place where the driver's typed errors become
// gRPC codes, and where codes from a remote zfsd become typed errors again.
package errcode

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

// Of classifies err. An error that already carries a status keeps its code.
func Of(err error) codes.Code {
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	// Before NotFound: a pool that is not imported answers "does not
	// exist" for every dataset, and a CO reads NotFound on a delete as done.
	case errors.Is(err, zfsd.ErrUnavailable), errors.Is(err, zfs.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, zfsd.ErrNotFound), errors.Is(err, zfs.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, zfsd.ErrAlreadyExists), errors.Is(err, zfs.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, zfsd.ErrInvalid), errors.Is(err, zfs.ErrInvalid),
		errors.Is(err, zfsd.ErrUnsupported), errors.Is(err, zfs.ErrUnsupported):
		return codes.InvalidArgument
	case errors.Is(err, zfsd.ErrTooSmall):
		return codes.OutOfRange
	case errors.Is(err, zfs.ErrOutOfSpace), errors.Is(err, zfs.ErrQuotaExceeded):
		return codes.ResourceExhausted
	case errors.Is(err, zfsd.ErrBusy), errors.Is(err, zfs.ErrBusy), errors.Is(err, zfs.ErrHasDependents):
		return codes.FailedPrecondition
	}
	return codes.Internal
}

// ToStatus turns err into a gRPC status error carrying its message.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return err
	}
	return status.Error(Of(err), err.Error())
}

// FromStatus turns a status from a remote zfsd back into an error that
// errors.Is matches against the zfsd sentinels, so callers treat local and
// remote pools alike.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	var sentinel error
	switch s.Code() {
	case codes.NotFound:
		sentinel = zfsd.ErrNotFound
	case codes.AlreadyExists:
		sentinel = zfsd.ErrAlreadyExists
	case codes.InvalidArgument:
		sentinel = zfsd.ErrInvalid
	case codes.FailedPrecondition:
		sentinel = zfsd.ErrBusy
	case codes.OutOfRange:
		sentinel = zfsd.ErrTooSmall
	default:
		return err
	}
	return &remoteError{msg: s.Message(), code: s.Code(), sentinel: sentinel}
}

type remoteError struct {
	msg      string
	code     codes.Code
	sentinel error
}

func (e *remoteError) Error() string              { return fmt.Sprintf("zfsd: %s", e.msg) }
func (e *remoteError) Unwrap() error              { return e.sentinel }
func (e *remoteError) GRPCStatus() *status.Status { return status.New(e.code, e.Error()) }
