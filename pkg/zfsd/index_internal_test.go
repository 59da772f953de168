package zfsd

import (
	"testing"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// A first stream into a replica broken off with zfs recv -s leaves a
// dataset carrying the stream's properties (received) and a resume token,
// but no snapshot (as recorded on OpenZFS 2.1): it is not a copy of the dot
// until the stream is resumed. A copy with commits whose next increment
// broke off is still a copy, at its newest commit.
func TestPartialFirstReceiveIsNotADot(t *testing.T) {
	p := &Pool{cfg: Config{Name: "tank"}, dotsRoot: "tank/dots"}
	own := func(v string) zfs.Property { return zfs.Property{Value: v, Source: "received"} }
	none := zfs.Property{Value: "-", Source: "-"}
	tok := zfs.Property{Value: "1-9747a2e5e-c0-789c63", Source: "-"}
	dot := func(id string, token zfs.Property) zfs.Dataset {
		return zfs.Dataset{Name: "tank/dots/" + id, Props: map[string]zfs.Property{
			"type": {Value: "filesystem", Source: "-"}, propManaged: own("true"), propID: own(id), "receive_resume_token": token}}
	}
	snap := zfs.Dataset{Name: "tank/dots/b@c1", Props: map[string]zfs.Property{
		"type": {Value: "snapshot", Source: "-"}, propManaged: {Value: "true", Source: "inherited from tank/dots/b"}, "receive_resume_token": none}}
	dots, commits := p.parse([]zfs.Dataset{dot("a", tok), dot("b", tok), snap, dot("c", none)})
	if _, ok := dots["a"]; ok {
		t.Error("a first receive broken off is listed as a dot")
	}
	if _, ok := dots["b"]; !ok || commits["b@c1"] == nil {
		t.Errorf("a copy whose next increment broke off lost its place: dots %v commits %v", dots, commits)
	}
	if _, ok := dots["c"]; !ok {
		t.Error("a complete dot is missing")
	}
}
