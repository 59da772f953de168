package zfs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func readFixture(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseGetBothImplementations(t *testing.T) {
	for _, impl := range []string{"zfs-fuse-0.7", "openzfs-2.1"} {
		t.Run(impl, func(t *testing.T) {
			list, err := parseGet(readFixture(t, impl+"/get.txt"))
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]Dataset{}
			for _, d := range list {
				byName[d.Name] = d
			}
			root := strings.SplitN(list[0].Name, "/", 2)[0]
			abc := byName[root+"/dots/abc"]
			if abc.Type() != "filesystem" || abc.Bytes("refquota") != 104857600 {
				t.Fatalf("abc: type %q refquota %d", abc.Type(), abc.Bytes("refquota"))
			}
			if abc.OwnValue("io.dotmesh:name") != "foo" {
				t.Fatalf("abc name %q", abc.OwnValue("io.dotmesh:name"))
			}
			snap := byName[root+"/dots/abc@c1"]
			if snap.Type() != "snapshot" {
				t.Fatalf("snapshot type %q", snap.Type())
			}
			// Inherited user properties must not read as the snapshot's own.
			if v := snap.OwnValue("io.dotmesh:name"); v != "" {
				t.Fatalf("snapshot owns inherited name %q", v)
			}
			if snap.Bytes("refquota") != 0 {
				t.Fatalf("snapshot refquota '-' parsed as %d", snap.Bytes("refquota"))
			}
			if len(list) < 4 {
				t.Fatalf("parsed %d datasets", len(list))
			}
		})
	}
}

func TestParseGetRejectsGarbage(t *testing.T) {
	if _, err := parseGet("tank\tused\n"); err == nil {
		t.Fatal("short line accepted")
	}
}

func TestParseZpoolList(t *testing.T) {
	fuse, err := parseZpoolList(readFixture(t, "zfs-fuse-0.7/zpool-list.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if fuse[0].Name != "tp" || fuse[0].Size != 1016<<20 || fuse[0].Free != 1015<<20 || fuse[0].Health != "ONLINE" {
		t.Fatalf("zfs-fuse: %+v", fuse[0])
	}
	oz, err := parseZpoolList(readFixture(t, "openzfs-2.1/zpool-list.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if oz[0].Size != 1006632960 || oz[0].Free != 1002082816 {
		t.Fatalf("openzfs: %+v", oz[0])
	}
}

func TestParseBytes(t *testing.T) {
	cases := map[string]int64{"0": 0, "1024": 1024, "1K": 1024, "1016M": 1016 << 20, "2T": 2 << 40, "512B": 512}
	for in, want := range cases {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-", "none", "x", "-5M", "1.2.3G", "9999999E"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}

func TestClassifyRecordedErrors(t *testing.T) {
	cases := map[string]Kind{
		"zfs-fuse-0.7/err-zfs_destroy_tp_dots_nope.txt":           KindNotFound,
		"zfs-fuse-0.7/err-zfs_create_tp_dots_abc.txt":             KindAlreadyExists,
		"zfs-fuse-0.7/err-zfs_destroy_tp_dots_abc.txt":            KindHasDependents,
		"zfs-fuse-0.7/err-zpool_import_-d__tmp_zt_nope.txt":       KindNotFound,
		"zfs-fuse-0.7/err-zfs_create_-o_compression_lz4_tp_x.txt": KindInvalid,
		"zfs-fuse-0.7/err-zfs_list_-p.txt":                        KindUnsupported,
		"zfs-fuse-0.7/err-zfs_recv_-s_tp_y.txt":                   KindUnsupported,
		"zfs-fuse-0.7/err-busy.txt":                               KindBusy,
		"zfs-fuse-0.7/err-zvol.txt":                               KindUnsupported,
		"zfs-fuse-0.7/err-daemon-down.txt":                        KindUnavailable,
		"openzfs-2.1/err-notfound.txt":                            KindNotFound,
		"openzfs-2.1/err-busy.txt":                                KindBusy,
		"openzfs-2.1/err-outofspace.txt":                          KindOutOfSpace,
		"openzfs-2.1/err-dependents.txt":                          KindHasDependents,
		"openzfs-2.1/err-exists.txt":                              KindAlreadyExists,
		"openzfs-2.1/err-refquota-small.txt":                      KindInvalid,
		"openzfs-2.1/err-import.txt":                              KindNotFound,
		"openzfs-2.1/err-no-module.txt":                           KindUnavailable,
	}
	for f, want := range cases {
		e := newError("zfs x", "t", readFixture(t, f), errors.New("exit status 1"))
		if e.Kind != want {
			t.Errorf("%s: kind %v, want %v (%s)", f, e.Kind, want, e.Msg)
		}
		if !errors.Is(e, &Error{Kind: want}) {
			t.Errorf("%s: errors.Is does not match its sentinel", f)
		}
	}
	if !errors.Is(newError("zfs destroy", "x", "cannot destroy 'x': dataset is busy", nil), ErrBusy) {
		t.Fatal("ErrBusy sentinel does not match")
	}
	if errors.Is(newError("zfs destroy", "x", "dataset is busy", nil), ErrNotFound) {
		t.Fatal("busy matched NotFound")
	}
	// zfs-fuse's noise line is dropped from the message.
	e := newError("zpool create", "p", "Defaulting to 4K blocksize (ashift=12) for '/x'\ninvalid vdev specification", nil)
	if strings.Contains(e.Msg, "Defaulting") {
		t.Fatalf("noise kept: %q", e.Msg)
	}
}

func TestValidateNames(t *testing.T) {
	good := []string{"tank", "tank/dots/0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f", "p_1.x-y"}
	for _, n := range good {
		if err := ValidateDataset(n); err != nil {
			t.Errorf("%q refused: %v", n, err)
		}
	}
	bad := []string{"", "/tank", "tank/", "tank//a", "tank/../x", "tank/.", "tank/-o", "tank/a b", "tank/a@b", "tank/a\x00b",
		"tank/a;rm", "tank/$(x)", "tank/a:b", strings.Repeat("a", 256)}
	for _, n := range bad {
		err := ValidateDataset(n)
		if err == nil || !IsKind(err, KindInvalid) {
			t.Errorf("%q accepted or wrong kind: %v", n, err)
		}
	}
	if err := ValidateSnapshot("tank/a@s1"); err != nil {
		t.Error(err)
	}
	for _, n := range []string{"tank/a", "tank/a@", "tank/a@b@c", "tank/a@-x", "@s"} {
		if ValidateSnapshot(n) == nil {
			t.Errorf("snapshot %q accepted", n)
		}
	}
	for _, n := range []string{"mirror1", "raidz", "log", "-p", "a/b"} {
		if ValidatePool(n) == nil {
			t.Errorf("pool %q accepted", n)
		}
	}
	if validateProp("io.dotmesh:name", "a\tb") == nil || validateProp("io.dotmesh:name", "-rf") == nil || validateProp("Bad Name", "x") == nil {
		t.Error("bad property accepted")
	}
	if err := validateProp("io.dotmesh:name", "pvc-1"); err != nil {
		t.Error(err)
	}
}

// fakeRunner replays canned results keyed by the command line and records calls.
type fakeRunner struct {
	mu      sync.Mutex
	calls   []string
	results map[string][]result // consumed in order; the last repeats
}

type result struct{ stdout, stderr string }

func (f *fakeRunner) Run(_ context.Context, _ io.Reader, name string, args ...string) ([]byte, []byte, error) {
	line := strings.Join(append([]string{name}, args...), " ")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, line)
	rs := f.results[line]
	if len(rs) == 0 {
		return nil, nil, nil
	}
	r := rs[0]
	if len(rs) > 1 {
		f.results[line] = rs[1:]
	}
	if r.stderr != "" {
		return []byte(r.stdout), []byte(r.stderr), errors.New("exit status 1")
	}
	return []byte(r.stdout), nil, nil
}

func (f *fakeRunner) Start(context.Context, string, ...string) (Process, error) {
	return nil, errors.New("not in this fake")
}

func TestDestroyRetriesBusyAfterUnmount(t *testing.T) {
	f := &fakeRunner{results: map[string][]result{
		"zfs destroy tank/d": {{stderr: "cannot destroy 'tank/d': dataset is busy"}, {stderr: "cannot destroy 'tank/d': dataset is busy"}, {}},
	}}
	c := New(f, Options{BusyDelay: time.Millisecond})
	if err := c.Destroy(context.Background(), "tank/d", false); err != nil {
		t.Fatal(err)
	}
	want := []string{"zfs destroy tank/d", "zfs unmount tank/d", "zfs destroy tank/d", "zfs unmount tank/d", "zfs destroy tank/d"}
	if strings.Join(f.calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q\nwant  %q", f.calls, want)
	}
}

func TestDestroyBusyIsBounded(t *testing.T) {
	f := &fakeRunner{results: map[string][]result{
		"zfs destroy tank/d": {{stderr: "cannot destroy 'tank/d': dataset is busy"}},
	}}
	c := New(f, Options{BusyDelay: time.Millisecond, BusyRetries: 3})
	err := c.Destroy(context.Background(), "tank/d", false)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("want Busy, got %v", err)
	}
	n := 0
	for _, c := range f.calls {
		if c == "zfs destroy tank/d" {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d destroy attempts, want 4 (1 + 3 retries)", n)
	}
}

func TestNoCommandForBadNames(t *testing.T) {
	f := &fakeRunner{}
	c := New(f, Options{})
	ctx := context.Background()
	errs := []error{
		c.Create(ctx, "tank/../etc", nil),
		c.Destroy(ctx, "tank/a b", true),
		c.Set(ctx, "tank/a", "io.dotmesh:x", "a\nb"),
		c.Snapshot(ctx, "tank/a", nil),
		c.Clone(ctx, "tank/a@s", "-o/x", nil),
	}
	for i, err := range errs {
		if !IsKind(err, KindInvalid) {
			t.Errorf("call %d: %v", i, err)
		}
	}
	if len(f.calls) != 0 {
		t.Fatalf("commands ran for invalid names: %q", f.calls)
	}
}

func TestUnmountNotMountedIsSuccess(t *testing.T) {
	f := &fakeRunner{results: map[string][]result{
		"zfs unmount tank/d": {{stderr: "cannot unmount 'tank/d': not currently mounted"}},
	}}
	if err := New(f, Options{}).Unmount(context.Background(), "tank/d"); err != nil {
		t.Fatal(err)
	}
}

func TestParsableIsDetected(t *testing.T) {
	fuse := &fakeRunner{results: map[string][]result{
		"zpool list -Hp -o name":                 {{stderr: readFixture(t, "zfs-fuse-0.7/err-zfs_list_-p.txt")}},
		"zpool list -H -o name,size,free,health": {{stdout: readFixture(t, "zfs-fuse-0.7/zpool-list.txt")}},
	}}
	pools, err := New(fuse, Options{}).ListPools(context.Background())
	if err != nil || len(pools) != 2 || pools[0].Size != 1016<<20 {
		t.Fatalf("zfs-fuse pools %+v, %v", pools, err)
	}
	oz := &fakeRunner{results: map[string][]result{
		"zpool list -Hp -o name,size,free,health": {{stdout: readFixture(t, "openzfs-2.1/zpool-list.txt")}},
	}}
	pools, err = New(oz, Options{}).ListPools(context.Background())
	if err != nil || len(pools) != 1 || pools[0].Size != 1006632960 {
		t.Fatalf("openzfs pools %+v, %v", pools, err)
	}
}
