package zfsd

import (
	"errors"
	"maps"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseParams checks StorageClass parameters, three keys at a time:
// what is understood reads back the same from its stored and wire forms,
// each key is judged on its own, and what is accepted is within bounds.
func FuzzParseParams(f *testing.F) {
	f.Add("cloneMode", "detached", "compression", "zstd-19", "replicas", "2")
	f.Add("commitInterval", "1m30s", MetadataPrefix+"pvc/name", "data", "size", "1")
	f.Add("cloneMode", "clone", "commitInterval", "0", "compression", "gzip-0")
	f.Add("replicas", "+3", "commitInterval", "9.999999999s", "compression", "zstd-01")
	f.Add(MetadataPrefix, "a\rb", "replicas", "17", "Compression", "on")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		m := map[string]string{k1: v1, k2: v2, k3: v3}
		p, err := ParseParams(m)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v is not ErrInvalid", err)
		}
		// One bad key never hides another's verdict.
		for k, v := range m {
			one, kerr := ParseParams(map[string]string{k: v})
			if kerr != nil && (err == nil || !strings.Contains(err.Error(), k) && !strings.Contains(err.Error(), strconv.Quote(k))) {
				t.Fatalf("%s=%q is refused alone (%v) but not named in %v", k, v, kerr, err)
			}
			if kerr == nil && one.Map()[k] != p.Map()[k] {
				t.Fatalf("%s=%q reads as %q alone and %q among %v", k, v, one.Map()[k], p.Map()[k], m)
			}
		}
		if p.Replicas < 0 || p.Replicas > MaxReplicas || p.CommitInterval < 0 ||
			(p.CommitInterval != 0 && p.CommitInterval < MinCommitInterval) ||
			(p.Compression != "" && !validCompression(p.Compression)) || (p.CloneMode != "" && p.CloneMode != CloneInstant && p.CloneMode != CloneDetached) {
			t.Fatalf("accepted %+v", p)
		}
		for k := range p.Metadata {
			if !strings.HasPrefix(k, MetadataPrefix) {
				t.Fatalf("metadata key %q", k)
			}
		}
		// The wire form (Map) and the stored form (a property value)
		// read back as the same parameters, and Map is stable.
		wire, err := ParseParams(p.Map())
		if err != nil || !wire.Equal(p) || !maps.Equal(wire.Map(), p.Map()) {
			t.Fatalf("Map %v reads back as %+v, %v; want %+v", p.Map(), wire, err, p)
		}
		stored, err := ParseParams(decodeParams(encodeParams(p.Map())))
		if err != nil || !stored.Equal(p) {
			t.Fatalf("stored form %q reads back as %+v, %v; want %+v", encodeParams(p.Map()), stored, err, p)
		}
	})
}

// FuzzStoredParams reads a pool's stored parameters property, which a
// newer driver, or a person with `zfs set`, may have written.
func FuzzStoredParams(f *testing.F) {
	f.Add("cloneMode=detached&compression=lz4&replicas=3&commitInterval=1m30s&csi.storage.k8s.io%2Fpv%2Fname=pv")
	f.Add("replicas=2&replicas=3&newKey=x")
	f.Add("%zz;a=b")
	f.Fuzz(func(t *testing.T, v string) {
		p, _ := ParseParams(decodeParams(v))
		again, err := ParseParams(decodeParams(encodeParams(p.Map())))
		if err != nil || !again.Equal(p) {
			t.Fatalf("%q: kept %+v, which reads back as %+v, %v", v, p, again, err)
		}
	})
}

func FuzzParseSource(f *testing.F) {
	const dot, commit = "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f", "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f@7c9e6679-7425-40de-944b-e07fc1f90ae7"
	for _, s := range []string{"", "snapshot:" + commit, "volume:" + dot, "snapshot:", "volume", "clone:" + dot, ":" + dot, dot, "volume:a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, str string) {
		src, err := ParseSource(str)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !src.IsZero() {
				t.Fatalf("ParseSource(%q) = %+v, %v", str, src, err)
			}
			return
		}
		if src.String() != str {
			t.Fatalf("ParseSource(%q).String() = %q", str, src.String())
		}
		if src.IsZero() != (str == "") {
			t.Fatalf("ParseSource(%q) = %+v", str, src)
		}
		if !src.IsZero() && (src.Kind != SourceCommit && src.Kind != SourceDot || !strings.HasPrefix(src.ID, src.DotID())) {
			t.Fatalf("ParseSource(%q) = %+v, dot %q", str, src, src.DotID())
		}
		if again, err := ParseSource(src.String()); err != nil || again != src {
			t.Fatalf("%+v reads back as %+v, %v", src, again, err)
		}
	})
}
