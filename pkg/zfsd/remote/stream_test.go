package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/dotmesh-io/dotmesh-csi/pkg/replication"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/api"
)

// receiver plays the receiving zfsd: it keeps what a stream brought.
type receiver struct {
	api.UnimplementedZfsdServer
	header *api.ReceiveHeader
	data   bytes.Buffer
	msgs   int
	refuse error // the verdict once the stream is in
	pool   string
}

func (r *receiver) Receive(stream api.Zfsd_ReceiveServer) error {
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if r.msgs++; r.msgs == 1 {
			r.header = m.GetHeader()
		}
		r.data.Write(m.GetData())
	}
	if r.refuse != nil {
		return r.refuse
	}
	return stream.SendAndClose(&api.ReceiveReply{Bytes: int64(r.data.Len())})
}

func (r *receiver) Snapshots(ctx context.Context, _ *api.DotRef) (*api.SnapshotList, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(PoolHeader)) > 0 {
		r.pool = md.Get(PoolHeader)[0]
	}
	return &api.SnapshotList{ResumeToken: "tok", Snapshots: []*api.Snapshot{{Name: "a", Guid: "1"}, {Name: "b", Guid: "2"}}}, nil
}

// dial serves r in memory and returns it as a push's peer on pool "p2".
func dial(t *testing.T, r *receiver) peer {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(ServerOptions(nil, nil)...)
	api.RegisterZfsdServer(srv, r)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///receiver", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return peer{c: NewPoolClient(conn, "p2"), addr: "receiver"}
}

func TestPeerReceive(t *testing.T) {
	r := &receiver{}
	p := dial(t, r)
	payload := bytes.Repeat([]byte("0123456789abcdef"), (5*chunkSize/2)/16)
	h := replication.Header{DotID: "d1", Base: "a", Commit: "b", Master: true}
	n, err := p.Receive(context.Background(), h, func(w io.Writer) (int64, error) {
		k, err := w.Write(payload)
		return int64(k), err
	})
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if n != int64(len(payload)) || !bytes.Equal(r.data.Bytes(), payload) {
		t.Fatalf("sent %d bytes, receiver got %d (equal: %v), want %d", n, r.data.Len(), bytes.Equal(r.data.Bytes(), payload), len(payload))
	}
	want := &api.ReceiveHeader{DotId: "d1", Base: "a", Commit: "b", Master: true}
	if r.header.String() != want.String() {
		t.Fatalf("header %v, want %v", r.header, want)
	}
	// The header goes alone, then 2.5 chunks of data in 3 messages.
	if r.msgs != 4 {
		t.Fatalf("%d messages, want 4", r.msgs)
	}
}

func TestPeerReceiveFails(t *testing.T) {
	write := func(w io.Writer) (int64, error) {
		k, err := w.Write([]byte("some"))
		return int64(k), err
	}
	t.Run("receiver refuses", func(t *testing.T) {
		p := dial(t, &receiver{refuse: status.Error(codes.FailedPrecondition, "destination has been modified")})
		_, err := p.Receive(context.Background(), replication.Header{DotID: "d1", Commit: "b"}, write)
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("refused stream: %v, want the receiver's FailedPrecondition", err)
		}
	})
	t.Run("sender breaks", func(t *testing.T) {
		p := dial(t, &receiver{refuse: status.Error(codes.DataLoss, "stream ended early")})
		n, err := p.Receive(context.Background(), replication.Header{DotID: "d1", Commit: "b"}, func(w io.Writer) (int64, error) {
			n, _ := write(w)
			return n, errors.New("zfs send died")
		})
		if n != 4 || err == nil || !strings.Contains(err.Error(), "zfs send died") || !strings.Contains(err.Error(), "stream ended early") {
			t.Fatalf("broken send: %d bytes, %v; want 4 bytes and both sides' account", n, err)
		}
	})
}

func TestPeerCopyOf(t *testing.T) {
	r := &receiver{}
	c, err := dial(t, r).CopyOf(context.Background(), "d1")
	if err != nil {
		t.Fatal(err)
	}
	want := replication.Copy{ResumeToken: "tok", Snapshots: []zfsd.Snapshot{{Name: "a", GUID: "1"}, {Name: "b", GUID: "2"}}}
	if !reflect.DeepEqual(c, want) || r.pool != "p2" {
		t.Fatalf("copy %+v asked of pool %q, want %+v of p2", c, r.pool, want)
	}
}
