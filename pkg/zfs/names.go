package zfs

import (
	"fmt"
	"strings"
)

// ZFS limits a full dataset name to 255 bytes (ZFS_MAX_DATASET_NAME_LEN - 1).
const maxNameLen = 255

// validComponent checks one component of a dataset name against the
// characters both OpenZFS and zfs-fuse accept, minus ':' which we reserve for
// property names. Rejecting early means no name ever reaches the tools that
// could be read as an option or a path trick.
func validComponent(c string) error {
	if c == "" {
		return fmt.Errorf("empty name component")
	}
	if c == "." || c == ".." {
		return fmt.Errorf("name component %q is not allowed", c)
	}
	if c[0] == '-' {
		return fmt.Errorf("name component %q may not start with '-'", c)
	}
	for _, r := range c {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-' || r == '_' || r == '.':
		default:
			return fmt.Errorf("name component %q has invalid character %q", c, r)
		}
	}
	return nil
}

// ValidatePool checks a pool name.
func ValidatePool(name string) error {
	if err := validComponent(name); err != nil {
		return &Error{Kind: KindInvalid, Op: "validate pool name", Target: name, Msg: err.Error()}
	}
	if len(name) > maxNameLen {
		return &Error{Kind: KindInvalid, Op: "validate pool name", Target: name, Msg: "too long"}
	}
	// zpool reserves these (and names starting with c[0-9]).
	for _, r := range []string{"mirror", "raidz", "spare", "log", "draid"} {
		if strings.HasPrefix(name, r) {
			return &Error{Kind: KindInvalid, Op: "validate pool name", Target: name, Msg: "reserved prefix " + r}
		}
	}
	return nil
}

// ValidateDataset checks a filesystem or volume name "pool/a/b".
func ValidateDataset(name string) error {
	if len(name) > maxNameLen {
		return &Error{Kind: KindInvalid, Op: "validate dataset name", Target: name, Msg: "too long"}
	}
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if err := validComponent(p); err != nil {
			return &Error{Kind: KindInvalid, Op: "validate dataset name", Target: name, Msg: err.Error()}
		}
	}
	return nil
}

// ValidateSnapshot checks "pool/a/b@snap".
func ValidateSnapshot(name string) error {
	ds, snap, ok := strings.Cut(name, "@")
	if !ok {
		return &Error{Kind: KindInvalid, Op: "validate snapshot name", Target: name, Msg: "missing '@'"}
	}
	if len(name) > maxNameLen {
		return &Error{Kind: KindInvalid, Op: "validate snapshot name", Target: name, Msg: "too long"}
	}
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	if err := validComponent(snap); err != nil {
		return &Error{Kind: KindInvalid, Op: "validate snapshot name", Target: name, Msg: err.Error()}
	}
	return nil
}

// validateProp checks a property name and value. User properties carry
// module:name; values may hold anything but the separators our parser uses.
func validateProp(name, value string) error {
	if name == "" || len(name) > 256 {
		return &Error{Kind: KindInvalid, Op: "validate property", Target: name, Msg: "bad property name length"}
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == ':' || r == '_' || r == '-' || r == '.' || r == '@'
		if !ok {
			return &Error{Kind: KindInvalid, Op: "validate property", Target: name, Msg: fmt.Sprintf("invalid character %q in property name", r)}
		}
	}
	if len(value) > 8191 {
		return &Error{Kind: KindInvalid, Op: "validate property", Target: name, Msg: "value longer than 8191 bytes"}
	}
	if strings.ContainsAny(value, "\x00\t\n\r") {
		return &Error{Kind: KindInvalid, Op: "validate property", Target: name, Msg: "value has a control character"}
	}
	if strings.HasPrefix(value, "-") && !isNumberLike(value) {
		return &Error{Kind: KindInvalid, Op: "validate property", Target: name, Msg: "value may not start with '-'"}
	}
	return nil
}

func isNumberLike(s string) bool {
	_, err := parseBytes(s)
	return err == nil
}
