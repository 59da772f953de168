package replication

import (
	"strings"
	"testing"

	"github.com/dotmesh-io/dotmesh-csi/pkg/zfs"
)

// FuzzHeader checks the receiver's check of a stream header from the
// network: what passes names one dot directly under the dots root, and
// snapshots of it, whatever the sender put there.
func FuzzHeader(f *testing.F) {
	const id = "0b0e4c9e-1f6b-4e4e-9d8b-0a1b2c3d4e5f"
	const commit = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	f.Add(id, "", commit)
	f.Add(id, commit, commit)
	f.Add(strings.ToUpper(id), "", "")
	f.Add("{"+id+"}", "", "")
	f.Add(id, "-a", "b@c")
	f.Add("d1", "a", "b")
	f.Add("", "", "")
	f.Fuzz(func(t *testing.T, dotID, base, commit string) {
		h := Header{DotID: dotID, Base: base, Commit: commit}
		if h.Validate() != nil {
			return
		}
		const root = "tank/dots"
		if strings.ContainsAny(dotID, "/@") || zfs.ValidateDataset(root+"/"+dotID) != nil {
			t.Fatalf("accepted dot ID %q", dotID)
		}
		// Snapshot names are only logged; what passes is one name of the
		// characters ZFS takes, whatever the length of the pool's root.
		for _, s := range []string{base, commit} {
			if s != "" && (strings.HasPrefix(s, "-") || s == "." || s == ".." ||
				strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "") {
				t.Fatalf("accepted snapshot name %q", s)
			}
		}
		for _, resume := range []bool{false, true} {
			h.Resume, h.Master = resume, !resume
			if err := h.Validate(); err != nil {
				t.Fatalf("resume/master flags changed the verdict on %+v: %v", h, err)
			}
		}
	})
}
