//go:build zfs

package zfs

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestChrootRunnerReportsMissingBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("chroot needs root; running as uid %d (run through make test)", os.Geteuid())
	}
	root := t.TempDir()
	_, _, err := ExecRunner{Root: root}.Run(context.Background(), nil, "zfs", "list")
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("want a no-such-file error from inside the empty root, got %v", err)
	}
}
