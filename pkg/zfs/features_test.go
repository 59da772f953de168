package zfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePoolPropsBothImplementations(t *testing.T) {
	fuse, err := parsePoolProps(readFixture(t, "zfs-fuse-0.7/zpool-get-all.txt"), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(fuse.Flags) != 0 || fuse.Version != "23" {
		t.Fatalf("zfs-fuse: flags %v version %q; want none and 23", fuse.Flags, fuse.Version)
	}
	if fuse.Has("lz4_compress") || !strings.Contains(fuse.Why("zstd_compress"), "no feature flags (pool version 23)") {
		t.Fatalf("zfs-fuse: has lz4 %v, why %q", fuse.Has("lz4_compress"), fuse.Why("zstd_compress"))
	}

	oz, err := parsePoolProps(readFixture(t, "openzfs-2.1/zpool-get-all.txt"), true)
	if err != nil {
		t.Fatal(err)
	}
	// lz4 is active from creation (metadata uses it); zstd only enabled
	// until a dataset uses it. Both count as supported.
	if oz.Flags["lz4_compress"] != "active" || oz.Flags["zstd_compress"] != "enabled" || oz.Version != "-" {
		t.Fatalf("openzfs: lz4 %q zstd %q version %q", oz.Flags["lz4_compress"], oz.Flags["zstd_compress"], oz.Version)
	}
	for _, f := range []string{"lz4_compress", "zstd_compress", "extensible_dataset"} {
		if !oz.Has(f) {
			t.Errorf("openzfs: %s not usable", f)
		}
	}

	old, err := parsePoolProps(readFixture(t, "openzfs-2.1/zpool-get-all-nofeatures.txt"), true)
	if err != nil {
		t.Fatal(err)
	}
	if old.Has("zstd_compress") || old.Why("zstd_compress") != "feature@zstd_compress is disabled" {
		t.Fatalf("pool with features disabled: has zstd %v, why %q", old.Has("zstd_compress"), old.Why("zstd_compress"))
	}
	if oz.Why("nonesuch") != "this ZFS does not know feature@nonesuch" {
		t.Fatalf("unknown feature: %q", oz.Why("nonesuch"))
	}
	for _, bad := range []string{"", "size\n", "a\tb\tc\n"} {
		if _, err := parsePoolProps(bad, true); err == nil {
			t.Errorf("tabbed %q accepted", bad)
		}
	}
}

func TestGetPoolFeaturesFallsBackToTheTable(t *testing.T) {
	fuse := &fakeRunner{results: map[string][]result{
		"zpool get -H -o property,value all tp": {{stderr: readFixture(t, "zfs-fuse-0.7/err-zpool_get_-H_all_tp.txt")}},
		"zpool get all tp":                      {{stdout: readFixture(t, "zfs-fuse-0.7/zpool-get-all.txt")}},
	}}
	f, err := New(fuse, Options{}).GetPoolFeatures(context.Background(), "tp")
	if err != nil || f.Version != "23" || len(f.Flags) != 0 {
		t.Fatalf("zfs-fuse: %+v, %v", f, err)
	}
	oz := &fakeRunner{results: map[string][]result{
		"zpool get -H -o property,value all tank": {{stdout: readFixture(t, "openzfs-2.1/zpool-get-all.txt")}},
	}}
	f, err = New(oz, Options{}).GetPoolFeatures(context.Background(), "tank")
	if err != nil || !f.Has("zstd_compress") {
		t.Fatalf("openzfs: %+v, %v", f, err)
	}
	if len(oz.calls) != 1 {
		t.Fatalf("openzfs took %d calls: %q", len(oz.calls), oz.calls)
	}
	// Any other failure is not read as "no features".
	gone := &fakeRunner{results: map[string][]result{
		"zpool get -H -o property,value all tank": {{stderr: "cannot open 'tank': no such pool"}},
	}}
	if _, err := New(gone, Options{}).GetPoolFeatures(context.Background(), "tank"); !IsKind(err, KindNotFound) {
		t.Fatalf("missing pool: %v", err)
	}
}

func TestCompressionFeature(t *testing.T) {
	cases := map[string][2]string{
		"lz4": {"lz4", "lz4_compress"}, "zstd": {"zstd", "zstd_compress"}, "zstd-19": {"zstd", "zstd_compress"},
		"gzip-9": {"gzip", ""}, "on": {"on", ""}, "lzjb": {"lzjb", ""}, "zle": {"zle", ""},
	}
	for v, want := range cases {
		if a, f := CompressionFeature(v); a != want[0] || f != want[1] {
			t.Errorf("CompressionFeature(%q) = %q, %q; want %q, %q", v, a, f, want[0], want[1])
		}
	}
}

func TestResumableReceiveIsAsked(t *testing.T) {
	fuse := &fakeRunner{results: map[string][]result{
		"zfs get -Hp -o name,property,value,source receive_resume_token tp": {{stderr: readFixture(t, "zfs-fuse-0.7/err-zfs_get_receive_resume_token.txt")}},
	}}
	if ok, err := New(fuse, Options{}).ResumableReceive(context.Background(), "tp"); ok || err != nil {
		t.Fatalf("zfs-fuse: %v, %v", ok, err)
	}
	oz := &fakeRunner{results: map[string][]result{
		"zfs get -Hp -o name,property,value,source receive_resume_token tank": {{stdout: "tank\treceive_resume_token\t-\t-\n"}},
	}}
	if ok, err := New(oz, Options{}).ResumableReceive(context.Background(), "tank"); !ok || err != nil {
		t.Fatalf("openzfs: %v, %v", ok, err)
	}
}

func TestLegacyMountIsReadFromTheKernel(t *testing.T) {
	for impl, want := range map[string]bool{"zfs-fuse-0.7": false, "openzfs-2.1": true} {
		c := New(&fakeRunner{}, Options{ProcFilesystems: filepath.Join("testdata", impl, "proc-filesystems.txt")})
		if got := c.LegacyMount(); got != want {
			t.Errorf("%s: LegacyMount %v, want %v", impl, got, want)
		}
	}
	if New(&fakeRunner{}, Options{ProcFilesystems: "/nonexistent"}).LegacyMount() {
		t.Error("unreadable filesystems list read as zfs")
	}
	if !parseFilesystems("nodev\tsysfs\n\text4\nnodev\tzfs\n")["ext4"] || parseFilesystems("nodev\tzfsx\n")["zfs"] {
		t.Error("parseFilesystems")
	}
}

func TestMountLegacyArguments(t *testing.T) {
	f := &fakeRunner{}
	c := New(f, Options{})
	if err := c.MountLegacy(context.Background(), "tank/dots/a", "/var/lib/x/a"); err != nil {
		t.Fatal(err)
	}
	if want := "mount -t zfs tank/dots/a /var/lib/x/a"; strings.Join(f.calls, "|") != want {
		t.Fatalf("calls %q, want %q", f.calls, want)
	}
	for _, p := range []string{"rel/path", "/a/../b", "-o/x", ""} {
		if err := c.MountLegacy(context.Background(), "tank/dots/a", p); !IsKind(err, KindInvalid) {
			t.Errorf("path %q: %v", p, err)
		}
	}
	if err := c.MountLegacy(context.Background(), "-o", "/x"); !IsKind(err, KindInvalid) {
		t.Errorf("dataset -o: %v", err)
	}
	if len(f.calls) != 1 {
		t.Fatalf("commands ran for bad arguments: %q", f.calls)
	}
}

func TestParseResumeInfo(t *testing.T) {
	full, err := parseResumeInfo(readFixture(t, "openzfs-2.1/send-resume-full.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if full.ToName != "tank/dots/src@c1" || full.ToGUID != 0xec3f048392884a3b || full.FromGUID != 0 || full.Bytes != 0x3c2e90 {
		t.Fatalf("full: %+v", full)
	}
	inc, err := parseResumeInfo(readFixture(t, "openzfs-2.1/send-resume-incremental.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if inc.ToName != "tank/dots/src@c2" || inc.FromGUID != full.ToGUID || inc.Bytes != 0x1e2b98 {
		t.Fatalf("incremental: %+v", inc)
	}
	for _, bad := range []string{"", "resume token contents:\n\tbytes = 0x10\n", "\ttoguid = 0xzz\n\ttoname = a@b\n", "\ttoguid = 0x1\n\ttoname = -x@b\n"} {
		if _, err := parseResumeInfo(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidateResumeToken(t *testing.T) {
	rec := readFixture(t, "openzfs-2.1/get-resume-token.txt")
	tok := strings.Split(rec, "\t")[2]
	if err := ValidateResumeToken(tok); err != nil {
		t.Fatalf("recorded token refused: %v", err)
	}
	for _, bad := range []string{"", "-", "-t", "1-abc", "1-abc-12-", "1-ABC-12-ff", "x-abc-12-ff", "1-abc-12-ff-0", "1-a b-12-ff",
		"1-abc-12-ff\n", "1-abc-12-" + strings.Repeat("f", maxTokenLen)} {
		if err := ValidateResumeToken(bad); !IsKind(err, KindInvalid) {
			t.Errorf("%.30q accepted: %v", bad, err)
		}
	}
}

func TestResumeToken(t *testing.T) {
	rec := readFixture(t, "openzfs-2.1/get-resume-token.txt")
	f := &fakeRunner{results: map[string][]result{
		"zfs get -Hp -o name,property,value,source receive_resume_token tank/dots/dst":  {{stdout: rec}},
		"zfs get -Hp -o name,property,value,source receive_resume_token tank/dots/done": {{stdout: "tank/dots/done\treceive_resume_token\t-\t-\n"}},
	}}
	c := New(f, Options{})
	tok, err := c.ResumeToken(context.Background(), "tank/dots/dst")
	if err != nil || !strings.HasPrefix(tok, "1-") {
		t.Fatalf("token %q, %v", tok, err)
	}
	if tok, err := c.ResumeToken(context.Background(), "tank/dots/done"); tok != "" || err != nil {
		t.Fatalf("no token: %q, %v", tok, err)
	}
}

func TestResumeInfoRefusesStaleAndCorruptTokens(t *testing.T) {
	tok := strings.Split(readFixture(t, "openzfs-2.1/get-resume-token.txt"), "\t")[2]
	for _, fixture := range []string{"openzfs-2.1/err-send-t-stale.txt", "openzfs-2.1/err-send-t-corrupt.txt"} {
		f := &fakeRunner{results: map[string][]result{"zfs send -nv -t " + tok: {{stderr: readFixture(t, fixture)}}}}
		if _, err := New(f, Options{}).ResumeInfo(context.Background(), tok); err == nil {
			t.Errorf("%s: token accepted", fixture)
		}
	}
	f := &fakeRunner{results: map[string][]result{"zfs send -nv -t " + tok: {{stdout: readFixture(t, "openzfs-2.1/send-resume-full.txt")}}}}
	if ri, err := New(f, Options{}).ResumeInfo(context.Background(), tok); err != nil || ri.ToName != "tank/dots/src@c1" {
		t.Fatalf("usable token: %+v, %v", ri, err)
	}
}

func TestReceiveFlags(t *testing.T) {
	f := &fakeRunner{}
	c := New(f, Options{})
	ctx := context.Background()
	for _, o := range []ReceiveOptions{{}, {Force: true}, {Resumable: true}, {Force: true, Resumable: true}} {
		if err := c.Receive(ctx, "tank/dots/a", o, strings.NewReader("")); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"zfs recv -u tank/dots/a", "zfs recv -u -F tank/dots/a", "zfs recv -u -s tank/dots/a", "zfs recv -u -F -s tank/dots/a"}
	if strings.Join(f.calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q\nwant  %q", f.calls, want)
	}
}

func TestAbortReceive(t *testing.T) {
	f := &fakeRunner{results: map[string][]result{
		"zfs recv -A tank/dots/dst": {{}, {stderr: readFixture(t, "openzfs-2.1/err-recv-A-nostate.txt")}},
		"zfs recv -A tp/dots":       {{stderr: readFixture(t, "zfs-fuse-0.7/err-zfs_recv_-A.txt")}},
	}}
	c := New(f, Options{})
	ctx := context.Background()
	if err := c.AbortReceive(ctx, "tank/dots/dst"); err != nil {
		t.Fatal(err)
	}
	if err := c.AbortReceive(ctx, "tank/dots/dst"); !IsKind(err, KindNotFound) {
		t.Fatalf("nothing to abort: %v, want NotFound", err)
	}
	if err := c.AbortReceive(ctx, "tp/dots"); !IsKind(err, KindUnsupported) {
		t.Fatalf("zfs-fuse: %v, want Unsupported", err)
	}
}

func TestClassifyRecordedStreamErrors(t *testing.T) {
	cases := map[string]Kind{
		"openzfs-2.1/err-upgrade-needed.txt":                KindUnsupported,
		"openzfs-2.1/err-recv-A-nostate.txt":                KindNotFound,
		"openzfs-2.1/err-resume-exists.txt":                 KindBusy,
		"openzfs-2.1/err-already-mounted.txt":               KindBusy,
		"zfs-fuse-0.7/err-zfs_send_-t.txt":                  KindUnsupported,
		"zfs-fuse-0.7/err-zfs_recv_-A.txt":                  KindUnsupported,
		"zfs-fuse-0.7/err-zpool_get_-H_all_tp.txt":          KindInvalid,
		"zfs-fuse-0.7/err-zfs_get_receive_resume_token.txt": KindInvalid,
	}
	for f, want := range cases {
		if e := newError("zfs x", "t", readFixture(t, f), errors.New("exit status 1")); e.Kind != want {
			t.Errorf("%s: kind %v, want %v (%s)", f, e.Kind, want, e.Msg)
		}
	}
}

// streamRunner serves Start with canned stdout and records the command.
type streamRunner struct {
	fakeRunner
	started []string
	out     string
}

func (s *streamRunner) Start(_ context.Context, name string, args ...string) (Process, error) {
	s.started = append(s.started, strings.Join(append([]string{name}, args...), " "))
	return &fakeProcess{out: io.NopCloser(strings.NewReader(s.out))}, nil
}

type fakeProcess struct {
	out    io.ReadCloser
	closed bool
}

func (p *fakeProcess) Stdout() io.ReadCloser { return closeTracker{p} }
func (p *fakeProcess) Stdin() io.WriteCloser { return nil }
func (p *fakeProcess) Wait() ([]byte, error) { return nil, nil }

type closeTracker struct{ p *fakeProcess }

func (c closeTracker) Read(b []byte) (int, error) { return c.p.out.Read(b) }
func (c closeTracker) Close() error               { c.p.closed = true; return nil }

func TestSendResume(t *testing.T) {
	tok := strings.Split(readFixture(t, "openzfs-2.1/get-resume-token.txt"), "\t")[2]
	r := &streamRunner{out: "stream bytes"}
	var buf bytes.Buffer
	n, err := New(r, Options{}).SendResume(context.Background(), tok, &buf)
	if err != nil || n != 12 || buf.String() != "stream bytes" {
		t.Fatalf("sent %d %q, %v", n, buf.String(), err)
	}
	if want := "zfs send -t " + tok; len(r.started) != 1 || r.started[0] != want {
		t.Fatalf("started %q", r.started)
	}
	if _, err := New(r, Options{}).SendResume(context.Background(), "-R", &buf); !IsKind(err, KindInvalid) || len(r.started) != 1 {
		t.Fatalf("bad token: %v, started %q", err, r.started)
	}
}

// brokenWriter fails like a stream whose receiver has gone.
type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("stream to peer broke") }

func TestSendClosesItsEndWhenTheReceiverGoes(t *testing.T) {
	p := &fakeProcess{out: io.NopCloser(strings.NewReader("data"))}
	r := &procRunner{p: p}
	_, err := New(r, Options{}).Send(context.Background(), "tank/a@s", SendOptions{}, brokenWriter{})
	if err == nil || !strings.Contains(err.Error(), "stream to peer broke") {
		t.Fatalf("err %v", err)
	}
	if !p.closed {
		t.Fatal("zfs send's stdout left open: it would block on a pipe nobody reads")
	}
}

type procRunner struct {
	fakeRunner
	p *fakeProcess
}

func (r *procRunner) Start(context.Context, string, ...string) (Process, error) { return r.p, nil }
