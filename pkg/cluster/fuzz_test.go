package cluster

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// decodeObject reads JSON as the dynamic client does.
func decodeObject(b []byte) (*unstructured.Unstructured, bool) {
	var m map[string]interface{}
	if utiljson.Unmarshal(b, &m) != nil || m == nil {
		return nil, false
	}
	return &unstructured.Unstructured{Object: m}, true
}

func fuzzSeedDot() Dot {
	at := time.Date(2024, 5, 1, 10, 20, 30, 123456789, time.UTC)
	return Dot{ID: "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f", Name: "pvc-1", Capacity: 1 << 30, Master: "tp-a",
		Replicas:       []Replica{{Pool: "tp-b", Commit: "c1", Seq: 3, Updated: at, LastBytes: 4096}},
		CommitInterval: time.Minute, LastCommitAt: at, NewestCommit: "c2", Seq: 4,
		Loss:   &Loss{CommitsLost: 1, LastReplicatedCommit: "c1", LastReplicatedCommitAt: at, At: at, FromPool: "tp-a", ToPool: "tp-b"},
		Moving: "tp-b", MovingSince: at, Version: "42"}
}

// FuzzDotFrom checks the reading of Dot objects from the API server, which
// anyone allowed to edit them can fill: what is read writes back as an
// object that reads the same.
func FuzzDotFrom(f *testing.F) {
	for _, d := range []Dot{fuzzSeedDot(), {ID: "x"}} {
		u, err := dotObject(d, "node-a")
		if err != nil {
			f.Fatal(err)
		}
		b, err := json.Marshal(u.Object)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"spec":{"commitInterval":"1h1m"},"status":{"replicas":[{"updated":"2024-01-01T00:00:00+05:00"}],"loss":{}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, ok := decodeObject(b)
		if !ok {
			return
		}
		d, err := dotFrom(u)
		if err != nil {
			return
		}
		back, err := dotObject(d, "")
		if err != nil {
			t.Fatalf("%+v read from %s cannot be written: %v", d, b, err)
		}
		again, err := dotFrom(back)
		if err != nil || !reflect.DeepEqual(again, d) {
			t.Fatalf("%s reads as\n%+v\nwritten back reads as\n%+v, %v", b, d, again, err)
		}
	})
}

// FuzzPoolFrom is FuzzDotFrom for DotPool objects.
func FuzzPoolFrom(f *testing.F) {
	u, err := poolObject(Pool{Name: "tp-a", Node: "node-a", Address: "10.0.0.1:7070", Size: 1 << 30, Available: 1 << 29, Zvols: true,
		LastHeartbeat: time.Date(2024, 5, 1, 10, 20, 30, 5, time.UTC)})
	if err != nil {
		f.Fatal(err)
	}
	b, err := json.Marshal(u.Object)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"metadata":{"name":"p"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, ok := decodeObject(b)
		if !ok {
			return
		}
		p, err := poolFrom(u)
		if err != nil {
			return
		}
		back, err := poolObject(p)
		if err != nil {
			t.Fatalf("%+v read from %s cannot be written: %v", p, b, err)
		}
		again, err := poolFrom(back)
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("%s reads as %+v, written back reads as %+v, %v", b, p, again, err)
		}
	})
}
