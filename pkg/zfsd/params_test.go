package zfsd_test

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
)

func TestParseParams(t *testing.T) {
	meta := map[string]string{"csi.storage.k8s.io/pvc/name": "data"}
	for _, tc := range []struct {
		name string
		in   map[string]string
		want zfsd.Params
		bad  []string // keys the error must name
	}{
		{name: "none", in: nil},
		{name: "empty", in: map[string]string{}},
		{name: "all", in: map[string]string{"cloneMode": "detached", "compression": "zstd-19", "replicas": "2", "commitInterval": "1m",
			"csi.storage.k8s.io/pvc/name": "data"},
			want: zfsd.Params{CloneMode: zfsd.CloneDetached, Compression: "zstd-19", Replicas: 2, CommitInterval: time.Minute, Metadata: meta}},
		{name: "instant clone", in: map[string]string{"cloneMode": "clone"}, want: zfsd.Params{CloneMode: zfsd.CloneInstant}},
		{name: "gzip level", in: map[string]string{"compression": "gzip-9"}, want: zfsd.Params{Compression: "gzip-9"}},
		{name: "no interval", in: map[string]string{"commitInterval": "0"}},
		{name: "least interval", in: map[string]string{"commitInterval": "10s"}, want: zfsd.Params{CommitInterval: 10 * time.Second}},
		{name: "most replicas", in: map[string]string{"replicas": "16"}, want: zfsd.Params{Replicas: 16}},
		{name: "empty clone mode", in: map[string]string{"cloneMode": ""}, bad: []string{"cloneMode"}},
		{name: "gzip-0", in: map[string]string{"compression": "gzip-0"}, bad: []string{"compression"}},
		{name: "zstd-20", in: map[string]string{"compression": "zstd-20"}, bad: []string{"compression"}},
		{name: "zstd-01", in: map[string]string{"compression": "zstd-01"}, bad: []string{"compression"}},
		{name: "no replicas", in: map[string]string{"replicas": "0"}, bad: []string{"replicas"}},
		{name: "too many replicas", in: map[string]string{"replicas": "17"}, bad: []string{"replicas"}},
		{name: "replicas not a number", in: map[string]string{"replicas": "two"}, bad: []string{"replicas"}},
		{name: "interval too short", in: map[string]string{"commitInterval": "9s"}, bad: []string{"commitInterval"}},
		{name: "negative interval", in: map[string]string{"commitInterval": "-1m"}, bad: []string{"commitInterval"}},
		{name: "keys are case-sensitive", in: map[string]string{"Compression": "on"}, bad: []string{"Compression"}},
		{name: "control character in metadata", in: map[string]string{"csi.storage.k8s.io/pvc/name": "a\nb"}, bad: []string{"pvc/name"}},
		{name: "the good stay", in: map[string]string{"replicas": "2", "compression": "nope", "size": "1"},
			want: zfsd.Params{Replicas: 2}, bad: []string{"compression", "size"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := zfsd.ParseParams(tc.in)
			if !got.Equal(tc.want) || got.CloneMode != tc.want.CloneMode {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if len(tc.bad) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				// The stored form reads back as the same parameters.
				again, err := zfsd.ParseParams(got.Map())
				if err != nil || !again.Equal(got) {
					t.Errorf("Map %v reads back as %+v, %v", got.Map(), again, err)
				}
				return
			}
			if !errors.Is(err, zfsd.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			for _, k := range tc.bad {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("error %q does not name %s", err, k)
				}
			}
		})
	}
}

func TestParamsMap(t *testing.T) {
	for _, tc := range []struct {
		in   zfsd.Params
		want map[string]string
	}{
		{zfsd.Params{}, map[string]string{}},
		// An instant clone is what none asks for: two ways, one map.
		{zfsd.Params{CloneMode: zfsd.CloneInstant}, map[string]string{}},
		{zfsd.Params{CloneMode: zfsd.CloneDetached, Compression: "lz4", Replicas: 3, CommitInterval: 90 * time.Second,
			Metadata: map[string]string{"csi.storage.k8s.io/pv/name": "pv"}},
			map[string]string{"cloneMode": "detached", "compression": "lz4", "replicas": "3", "commitInterval": "1m30s",
				"csi.storage.k8s.io/pv/name": "pv"}},
	} {
		if got := tc.in.Map(); !maps.Equal(got, tc.want) {
			t.Errorf("%+v: Map %v, want %v", tc.in, got, tc.want)
		}
	}
	p := zfsd.Params{Metadata: map[string]string{"csi.storage.k8s.io/pv/name": "a"}}
	p.Map()["csi.storage.k8s.io/pv/name"] = "b"
	if p.Metadata["csi.storage.k8s.io/pv/name"] != "a" {
		t.Error("Map shares the metadata it was made from")
	}
	if (zfsd.Params{}).Props() != nil || (zfsd.Params{Compression: "on"}).Props()["compression"] != "on" {
		t.Error("Props: compression is the one ZFS property the parameters set")
	}
}

func TestSource(t *testing.T) {
	const dot, commit = "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f", "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f@7c9e6679-7425-40de-944b-e07fc1f90ae7"
	for _, tc := range []struct {
		str   string
		src   zfsd.Source
		dotID string
	}{
		{"", zfsd.Source{}, ""},
		{"snapshot:" + commit, zfsd.Source{Kind: zfsd.SourceCommit, ID: commit}, dot},
		{"volume:" + dot, zfsd.Source{Kind: zfsd.SourceDot, ID: dot}, dot},
	} {
		got, err := zfsd.ParseSource(tc.str)
		if err != nil || got != tc.src {
			t.Errorf("ParseSource(%q) = %+v, %v; want %+v", tc.str, got, err, tc.src)
		}
		if s := tc.src.String(); s != tc.str {
			t.Errorf("%+v.String() = %q, want %q", tc.src, s, tc.str)
		}
		if got.DotID() != tc.dotID || got.IsZero() != (tc.str == "") {
			t.Errorf("%q: DotID %q IsZero %v", tc.str, got.DotID(), got.IsZero())
		}
	}
	for _, bad := range []string{"snapshot:", "volume", "clone:" + dot, ":" + dot, dot} {
		if s, err := zfsd.ParseSource(bad); !errors.Is(err, zfsd.ErrInvalid) || !s.IsZero() {
			t.Errorf("ParseSource(%q) = %+v, %v; want ErrInvalid", bad, s, err)
		}
	}
}
