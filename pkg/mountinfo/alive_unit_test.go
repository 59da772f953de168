package mountinfo

import (
	"errors"
	"io/fs"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDeadConnectionErrors(t *testing.T) {
	wrap := func(e unix.Errno) error { return &fs.PathError{Op: "statfs", Path: "/x", Err: e} }
	for _, e := range []unix.Errno{unix.ENOTCONN, unix.ECONNABORTED, unix.ESTALE} {
		if !deadConnection(wrap(e)) || !deadConnection(e) {
			t.Errorf("%v not taken for a dead mount", e)
		}
	}
	for _, e := range []unix.Errno{unix.ENOENT, unix.EACCES, unix.EIO, unix.ENOTDIR, unix.EPERM} {
		if deadConnection(wrap(e)) {
			t.Errorf("%v taken for a dead mount", e)
		}
	}
	if deadConnection(nil) || deadConnection(errors.New("transport endpoint is not connected")) {
		t.Error("an error without an errno taken for a dead mount")
	}
}
