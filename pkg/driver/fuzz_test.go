package driver

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

const fuzzDot = "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f"

// FuzzIDs checks what the driver accepts of the volume and snapshot IDs and
// names a CO sends: an ID taken as ours names exactly one dot or commit
// under the pool's dots root, never a path, a second name or an option.
func FuzzIDs(f *testing.F) {
	for _, s := range []string{fuzzDot, fuzzDot + "@7c9e6679-7425-40de-944b-e07fc1f90ae7", strings.ToUpper(fuzzDot), "{" + fuzzDot + "}",
		"urn:uuid:" + fuzzDot, "0b0e4c9e1f6b4e4e9d8b0a1b2c3d4e5f", fuzzDot + "/x", "../" + fuzzDot, "pvc-1", "-rf", "a\x00b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		const root = "tank/dots/"
		if isDotID(id) {
			if checkID("volume", id) != nil || len(id) != 36 || strings.Trim(id, "0123456789abcdef-") != "" {
				t.Fatalf("dot ID %q", id)
			}
			if err := zfs.ValidateDataset(root + id); err != nil {
				t.Fatalf("dot ID %q is no dataset: %v", id, err)
			}
		}
		if isCommitID(id) {
			dot, c, _ := strings.Cut(id, "@")
			if checkID("snapshot", id) != nil || !isDotID(dot) || !isDotID(c) || strings.Contains(id, "/") {
				t.Fatalf("commit ID %q", id)
			}
			if err := zfs.ValidateSnapshot(root + id); err != nil {
				t.Fatalf("commit ID %q is no snapshot: %v", id, err)
			}
		}
		if checkID("volume", id) == nil {
			if id == "" || len(id) > maxNameLen || strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("checkID accepted %q", id)
			}
		}
		// Names are stored as property values: nothing a tool could read
		// as an option, and nothing that splits the parsed output.
		if validateName("volume", id) == nil {
			if id == "" || len(id) > maxNameLen || strings.HasPrefix(id, "-") || strings.ContainsAny(id, "/@: \t\n\r\x00") {
				t.Fatalf("name %q accepted", id)
			}
		}
	})
}

// FuzzPage checks ListVolumes' and ListSnapshots' paging over a starting
// token from the CO: a page lies within the list, and its next token
// starts the following page.
func FuzzPage(f *testing.F) {
	f.Add(10, "", int32(4))
	f.Add(10, "8", int32(4))
	f.Add(10, "-1", int32(0))
	f.Add(10, "+3", int32(2))
	f.Add(3, "3", int32(-1))
	f.Fuzz(func(t *testing.T, n int, token string, max int32) {
		if n < 0 || n > 1<<20 {
			return // a list's length
		}
		start, end, next, err := page(n, token, max)
		if err != nil {
			return
		}
		if start < 0 || start > end || end > n || (max > 0 && end-start > int(max)) {
			t.Fatalf("page(%d, %q, %d) = [%d, %d)", n, token, max, start, end)
		}
		if next == "" {
			if end != n {
				t.Fatalf("page(%d, %q, %d) ends at %d with no next token", n, token, max, end)
			}
			return
		}
		if i, err := strconv.Atoi(next); err != nil || i != end {
			t.Fatalf("next token %q, want %d", next, end)
		}
		if s, _, _, err := page(n, next, max); err != nil || s != end {
			t.Fatalf("next token %q starts at %d, %v", next, s, err)
		}
	})
}

// FuzzCheckPath checks the staging and target paths a CO sends: one that
// is accepted lies strictly inside an allowed folder.
func FuzzCheckPath(f *testing.F) {
	for _, p := range []string{"/pods/x/mount", "/pods", "/pods/", "/pods/../etc", "/pods/./a/../../b", "/podsx/a", "relative", "/pods/a\x00b", "/pods/..a", "/pods//a/"} {
		f.Add(p)
	}
	allowed := filepath.Join(f.TempDir(), "pods")
	d := &Driver{cfg: Config{AllowedTargetDirs: []string{allowed}}}
	f.Fuzz(func(t *testing.T, p string) {
		if strings.HasPrefix(p, "/pods") {
			p = allowed + strings.TrimPrefix(p, "/pods")
		}
		got, err := d.checkPath("target path", p)
		if err != nil {
			return
		}
		if got != filepath.Clean(p) || !filepath.IsAbs(got) {
			t.Fatalf("checkPath(%q) = %q", p, got)
		}
		if in := resolveExisting(allowed) + "/"; !strings.HasPrefix(resolveExisting(got), in) {
			t.Fatalf("checkPath(%q) = %q, which resolves to %s outside %s", p, got, resolveExisting(got), in)
		}
	})
}
