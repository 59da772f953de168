package zfs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Fuzz targets for everything this package reads from zfs and zpool. Each
// is seeded with the recorded outputs in testdata/ and with its corpus in
// testdata/fuzz/, so `go test` runs them all as plain tests; hack/fuzz.sh
// fuzzes each for a while.

// addFixtures seeds f with every recorded output whose name matches glob.
func addFixtures(f *testing.F, glob string) {
	f.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "*", glob))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no fixtures match %s: %v", glob, err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
}

// blank is what splitRows skips.
func blank(line string) bool { return strings.TrimSpace(line) == "" }

// wellFormed says whether every line splitRows keeps has fields fields.
func wellFormed(out string, fields int) bool {
	for _, line := range strings.Split(out, "\n") {
		if !blank(line) && strings.Count(line, "\t") != fields-1 {
			return false
		}
	}
	return true
}

func FuzzParseGet(f *testing.F) {
	addFixtures(f, "get*.txt")
	f.Add("a\tb\tc\n")
	f.Add("p/a\tused\t1\t-\np/b\tused\t2\t-\np/a\tused\t3\tlocal\n")
	f.Fuzz(func(t *testing.T, out string) {
		list, err := parseGet(out)
		if (err == nil) != wellFormed(out, 4) {
			t.Fatalf("parseGet error %v, but the output is well-formed: %v", err, wellFormed(out, 4))
		}
		if err != nil {
			return
		}
		// Each dataset once, in order of first appearance, holding the
		// last value a line gave each of its properties.
		want := map[string]map[string]Property{}
		var order []string
		for _, line := range strings.Split(out, "\n") {
			if blank(line) {
				continue
			}
			fs := strings.Split(line, "\t")
			if want[fs[0]] == nil {
				want[fs[0]] = map[string]Property{}
				order = append(order, fs[0])
			}
			want[fs[0]][fs[1]] = Property{Value: fs[2], Source: fs[3]}
		}
		if len(list) != len(order) {
			t.Fatalf("%d datasets, want %d", len(list), len(order))
		}
		for i, ds := range list {
			if ds.Name != order[i] || !reflect.DeepEqual(ds.Props, want[ds.Name]) {
				t.Fatalf("dataset %d: %+v, want %s %+v", i, ds, order[i], want[order[i]])
			}
			for p := range ds.Props {
				if n := ds.Bytes(p); n < 0 {
					t.Fatalf("%s %s: Bytes %d is negative", ds.Name, p, n)
				}
			}
		}
		// What the parse kept, written out again, reads back the same.
		var b strings.Builder
		for _, ds := range list {
			for _, p := range slices.Sorted(func(yield func(string) bool) {
				for k := range ds.Props {
					if !yield(k) {
						return
					}
				}
			}) {
				b.WriteString(ds.Name + "\t" + p + "\t" + ds.Props[p].Value + "\t" + ds.Props[p].Source + "\n")
			}
		}
		again, err := parseGet(b.String())
		if err != nil || !reflect.DeepEqual(again, list) {
			t.Fatalf("rewritten output reads back as %+v, %v; want %+v", again, err, list)
		}
	})
}

func FuzzParseZpoolList(f *testing.F) {
	addFixtures(f, "zpool-list.txt")
	f.Fuzz(func(t *testing.T, out string) {
		list, err := parseZpoolList(out)
		if err != nil {
			return
		}
		if !wellFormed(out, 4) {
			t.Fatalf("accepted a line without 4 fields in %q", out)
		}
		rows := 0
		for _, line := range strings.Split(out, "\n") {
			if !blank(line) {
				rows++
			}
		}
		if len(list) != rows {
			t.Fatalf("%d pools from %d lines", len(list), rows)
		}
		for _, p := range list {
			if p.Size < 0 || p.Free < 0 {
				t.Fatalf("negative size in %+v", p)
			}
		}
	})
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"0", "1024", "1K", "1016M", "1.98G", "3.31E", "512B", "-", "none", "-5M", "7.99E", "9223372036854775807", "+1", "1e3", "Inf"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseBytes(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("parseBytes(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("parseBytes(%q) = %d: a size is never negative", s, n)
		}
		// An exact count is read exactly, and reads back from its own form.
		if i, perr := strconv.ParseInt(strings.TrimSpace(s), 10, 64); perr == nil && i != n {
			t.Fatalf("parseBytes(%q) = %d, want %d", s, n, i)
		}
		if again, err := parseBytes(strconv.FormatInt(n, 10)); err != nil || again != n {
			t.Fatalf("parseBytes(%d) = %d, %v", n, again, err)
		}
	})
}

// FuzzClassify checks newError, which turns a tool's stderr into an Error:
// the noise line zfs-fuse prints never counts, the kind is the message's,
// and every Error is its kind's sentinel.
func FuzzClassify(f *testing.F) {
	addFixtures(f, "err-*.txt")
	f.Add("Defaulting to 4K blocksize (ashift=12) for '/tmp/x'\ncannot create 'tp': pool already exists")
	f.Fuzz(func(t *testing.T, stderr string) {
		e := newError("zfs destroy", "tp/x", stderr, nil)
		if e.Msg != strings.TrimSpace(e.Msg) {
			t.Fatalf("message %q is not trimmed", e.Msg)
		}
		for _, l := range strings.Split(e.Msg, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "Defaulting to 4K blocksize") {
				t.Fatalf("noise kept in %q", e.Msg)
			}
		}
		if e.Kind != classify(e.Msg) {
			t.Fatalf("kind %v, but the message %q is %v", e.Kind, e.Msg, classify(e.Msg))
		}
		noisy := newError("zfs destroy", "tp/x", "Defaulting to 4K blocksize (ashift=12)\n"+stderr, nil)
		if noisy.Kind != e.Kind || noisy.Msg != e.Msg {
			t.Fatalf("the noise line changed the error: %+v, want %+v", noisy, e)
		}
		sentinel := &Error{Kind: e.Kind}
		if !errors.Is(e, sentinel) || !IsKind(e, e.Kind) || !strings.HasPrefix(e.Error(), "zfs destroy tp/x: "+e.Kind.String()) {
			t.Fatalf("%v is not its own kind %v", e, e.Kind)
		}
		if e.Kind != KindOther && errors.Is(e, &Error{Kind: KindOther}) {
			t.Fatalf("%v is also KindOther", e)
		}
		if e.Msg == "" {
			if withCause := newError("zfs", "", stderr, errors.New("exit status 1")); withCause.Msg != "exit status 1" {
				t.Fatalf("empty stderr: message %q, want the run error", withCause.Msg)
			}
		}
	})
}

func FuzzParsePoolProps(f *testing.F) {
	for _, p := range []string{"zpool-get-all.txt", "zpool-get-all-nofeatures.txt"} {
		paths, _ := filepath.Glob(filepath.Join("testdata", "*", p))
		for _, path := range paths {
			b, err := os.ReadFile(path)
			if err != nil {
				f.Fatal(err)
			}
			// zfs-fuse prints the table; OpenZFS was asked for -H.
			f.Add(string(b), !strings.Contains(path, "zfs-fuse"))
		}
	}
	f.Add("feature@lz4_compress\tactive\nversion\t-\n", true)
	f.Fuzz(func(t *testing.T, out string, tabbed bool) {
		pf, err := parsePoolProps(out, tabbed)
		if err != nil {
			return
		}
		if tabbed && !wellFormed(out, 2) {
			t.Fatalf("accepted a line without 2 fields in %q", out)
		}
		for name, state := range pf.Flags {
			if pf.Has(name) != (state == "enabled" || state == "active") {
				t.Fatalf("Has(%q) = %v with state %q", name, pf.Has(name), state)
			}
			if pf.Has(name) && pf.Why(name) == "" {
				t.Fatalf("no reason for %q", name)
			}
		}
		// What was read, written as -H output, reads back the same.
		var b strings.Builder
		b.WriteString("version\t" + pf.Version + "\n")
		for name, state := range pf.Flags {
			b.WriteString("feature@" + name + "\t" + state + "\n")
		}
		again, err := parsePoolProps(b.String(), true)
		if err != nil || !reflect.DeepEqual(again, pf) {
			t.Fatalf("rewritten properties read back as %+v, %v; want %+v", again, err, pf)
		}
	})
}

func FuzzParseFilesystems(f *testing.F) {
	addFixtures(f, "proc-filesystems.txt")
	f.Fuzz(func(t *testing.T, s string) {
		types := parseFilesystems(s)
		for typ := range types {
			if typ == "" || strings.ContainsAny(typ, " \t\n") {
				t.Fatalf("type %q", typ)
			}
		}
		for _, line := range strings.Split(s, "\n") {
			if f := strings.Fields(line); len(f) > 0 && !types[f[len(f)-1]] {
				t.Fatalf("line %q: type %q missing", line, f[len(f)-1])
			}
		}
	})
}

func FuzzParseResumeInfo(f *testing.F) {
	addFixtures(f, "send-resume-*.txt")
	f.Fuzz(func(t *testing.T, out string) {
		ri, err := parseResumeInfo(out)
		if err != nil {
			return
		}
		if err := ValidateSnapshot(ri.ToName); err != nil {
			t.Fatalf("toname %q: %v", ri.ToName, err)
		}
		if ri.ToGUID == 0 || ri.Bytes < 0 {
			t.Fatalf("%+v: toguid 0 or negative bytes", ri)
		}
	})
}

func FuzzValidateResumeToken(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "openzfs-2.1", "get-resume-token.txt"))
	if err != nil {
		f.Fatal(err)
	}
	// The fixture is `zfs get` output; its third field is the token.
	f.Add(strings.Split(string(b), "\t")[2])
	f.Add("1-9ba09d214-c0-789c63")
	f.Add("-t-1-2")
	f.Fuzz(func(t *testing.T, token string) {
		if ValidateResumeToken(token) != nil {
			return
		}
		if len(token) > maxTokenLen || strings.HasPrefix(token, "-") || strings.Count(token, "-") != 3 ||
			strings.Trim(token, "0123456789abcdef-") != "" || strings.Trim(strings.Split(token, "-")[0], "0123456789") != "" {
			t.Fatalf("accepted token %q", token)
		}
	})
}

// FuzzValidateName checks what the name checks let through: nothing a
// tool could read as an option, a second name, or a path outside the pool.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"tp", "tp/dots/0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f", "tp/dots/a@b", "tp/../x", "-o", "mirror", "tp/a b", "tp//a", "tp/.", strings.Repeat("a", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		safeComponents := func(s string) {
			for _, c := range strings.Split(s, "/") {
				if c == "" || c == "." || c == ".." || strings.HasPrefix(c, "-") || strings.Trim(c, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "" {
					t.Fatalf("%q: accepted component %q", name, c)
				}
			}
		}
		if ValidatePool(name) == nil {
			if strings.Contains(name, "/") || ValidateDataset(name) != nil {
				t.Fatalf("pool %q is not a dataset name", name)
			}
		}
		if ValidateDataset(name) == nil {
			if len(name) > maxNameLen || strings.Contains(name, "@") {
				t.Fatalf("accepted dataset %q", name)
			}
			safeComponents(name)
			// It survives the trip through `zfs get` output.
			list, err := parseGet(name + "\ttype\tfilesystem\t-\n")
			if err != nil || len(list) != 1 || list[0].Name != name {
				t.Fatalf("%q read back from zfs get as %+v, %v", name, list, err)
			}
		}
		if ValidateSnapshot(name) == nil {
			ds, snap, _ := strings.Cut(name, "@")
			if len(name) > maxNameLen || strings.Contains(snap, "@") || strings.Contains(snap, "/") || ValidateDataset(ds) != nil {
				t.Fatalf("accepted snapshot %q", name)
			}
			safeComponents(ds)
			safeComponents(snap)
		}
	})
}
