package errcode

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func TestOf(t *testing.T) {
	cases := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("dot x: %w", zfsd.ErrNotFound), codes.NotFound},
		{&zfs.Error{Kind: zfs.KindNotFound, Op: "zfs get"}, codes.NotFound},
		{fmt.Errorf("wrapped: %w", &zfs.Error{Kind: zfs.KindAlreadyExists}), codes.AlreadyExists},
		{&zfs.Error{Kind: zfs.KindOutOfSpace}, codes.ResourceExhausted},
		{&zfs.Error{Kind: zfs.KindQuotaExceeded}, codes.ResourceExhausted},
		{&zfs.Error{Kind: zfs.KindBusy}, codes.FailedPrecondition},
		{&zfs.Error{Kind: zfs.KindHasDependents}, codes.FailedPrecondition},
		{&zfs.Error{Kind: zfs.KindInvalid}, codes.InvalidArgument},
		{&zfs.Error{Kind: zfs.KindUnsupported}, codes.InvalidArgument},
		{&zfs.Error{Kind: zfs.KindUnavailable}, codes.Unavailable},
		{fmt.Errorf("pool p: %w: not imported: %w", zfsd.ErrUnavailable, &zfs.Error{Kind: zfs.KindNotFound}), codes.Unavailable},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("something else"), codes.Internal},
		{status.Error(codes.Aborted, "in flight"), codes.Aborted},
	}
	for _, c := range cases {
		if got := Of(c.err); got != c.want {
			t.Errorf("Of(%v) = %v, want %v", c.err, got, c.want)
		}
		if got := status.Code(ToStatus(c.err)); got != c.want {
			t.Errorf("ToStatus(%v) code %v, want %v", c.err, got, c.want)
		}
	}
	if ToStatus(nil) != nil {
		t.Fatal("nil became an error")
	}
}

func TestFromStatusRoundTrip(t *testing.T) {
	for _, sentinel := range []error{zfsd.ErrNotFound, zfsd.ErrAlreadyExists, zfsd.ErrInvalid} {
		remote := ToStatus(fmt.Errorf("dot d on pool p: %w", sentinel))
		back := FromStatus(remote)
		if !errors.Is(back, sentinel) {
			t.Errorf("%v did not come back as %v", remote, sentinel)
		}
		if status.Code(back) != status.Code(remote) {
			t.Errorf("code changed on the way back: %v -> %v", status.Code(remote), status.Code(back))
		}
	}
	internal := status.Error(codes.Internal, "boom")
	if got := FromStatus(internal); status.Code(got) != codes.Internal {
		t.Errorf("internal became %v", got)
	}
}
