package driver

import (
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func TestCapacity(t *testing.T) {
	const def = 1 << 30
	cases := []struct {
		r    *csi.CapacityRange
		want int64
		code codes.Code
	}{
		{nil, def, codes.OK},
		{&csi.CapacityRange{RequiredBytes: 10 << 20}, 10 << 20, codes.OK},
		{&csi.CapacityRange{LimitBytes: 10 << 20}, 10 << 20, codes.OK},
		{&csi.CapacityRange{RequiredBytes: 100}, minCapacity, codes.OK},
		{&csi.CapacityRange{RequiredBytes: 100, LimitBytes: 2 << 20}, minCapacity, codes.OK},
		{&csi.CapacityRange{LimitBytes: 100}, 0, codes.OutOfRange},
		{&csi.CapacityRange{RequiredBytes: 5, LimitBytes: 4}, 0, codes.OutOfRange},
		{&csi.CapacityRange{RequiredBytes: -1}, 0, codes.InvalidArgument},
		{&csi.CapacityRange{LimitBytes: -1}, 0, codes.InvalidArgument},
	}
	for _, c := range cases {
		got, err := capacity(c.r, def)
		if status.Code(err) != c.code || (err == nil && got != c.want) {
			t.Errorf("capacity(%v) = %d, %v; want %d, %v", c.r, got, err, c.want, c.code)
		}
		if err == nil && !fits(got, c.r) && c.r.GetRequiredBytes() >= minCapacity {
			t.Errorf("capacity(%v) = %d does not fit its own range", c.r, got)
		}
	}
}

func TestIDShapes(t *testing.T) {
	const u = "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f"
	if !isDotID(u) || isDotID("0B0E4C9E-1F6B-4E4E-9D8B-0A1B2C3D4E5F") || isDotID("{"+u+"}") || isDotID("x") {
		t.Error("dot ID shape")
	}
	if !isCommitID(u+"@"+u) || isCommitID(u) || isCommitID(u+"@x") || isCommitID(u+"@"+u+"@"+u) {
		t.Error("commit ID shape")
	}
}

// The parsing itself is zfsd's (zfsd.TestParseParams); the driver
// answers what it refuses with InvalidArgument, naming the parameter.
func TestVolumeParams(t *testing.T) {
	p, err := volumeParams(map[string]string{"cloneMode": "detached", "replicas": "2"})
	if err != nil || p.CloneMode != zfsd.CloneDetached || p.Replicas != 2 {
		t.Errorf("%+v, %v", p, err)
	}
	_, err = volumeParams(map[string]string{"replicas": "0"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), `replicas="0"`) {
		t.Errorf("replicas=0: %v", err)
	}
}

func TestPage(t *testing.T) {
	s, e, next, err := page(10, "", 4)
	if s != 0 || e != 4 || next != "4" || err != nil {
		t.Fatalf("%d %d %q %v", s, e, next, err)
	}
	s, e, next, err = page(10, "8", 4)
	if s != 8 || e != 10 || next != "" || err != nil {
		t.Fatalf("%d %d %q %v", s, e, next, err)
	}
	for _, tok := range []string{"x", "-1", "11"} {
		if _, _, _, err := page(10, tok, 0); status.Code(err) != codes.Aborted {
			t.Errorf("token %q: %v", tok, err)
		}
	}
}
