package remote

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dotmesh-io/dotmesh-csi/pkg/replication"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// FuzzReceiveHeader feeds Receive's first message, as the bytes a sender
// put on the wire, to what Receive makes of it: garbage is refused by the
// decoder or by Validate, never a panic, and a header that passes reads
// the same after another trip over the wire.
func FuzzReceiveHeader(f *testing.F) {
	for _, h := range []replication.Header{
		{DotID: "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f", Commit: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Master: true},
		{DotID: "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f", Base: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Commit: "8c9e6679-7425-40de-944b-e07fc1f90ae7", Resume: true},
		{DotID: "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f/child", Commit: "b"},
	} {
		b, err := proto.Marshal(&api.ReceiveChunk{Header: headerToAPI(h), Data: []byte("stream")})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		var first api.ReceiveChunk
		if proto.Unmarshal(wire, &first) != nil || first.GetHeader() == nil {
			return
		}
		h := headerFromAPI(first.GetHeader())
		if h.Validate() != nil {
			return
		}
		b, err := proto.Marshal(headerToAPI(h))
		if err != nil {
			t.Fatalf("%+v: %v", h, err)
		}
		var again api.ReceiveHeader
		if err := proto.Unmarshal(b, &again); err != nil || headerFromAPI(&again) != h {
			t.Fatalf("%+v crosses the wire as %+v, %v", h, headerFromAPI(&again), err)
		}
	})
}
