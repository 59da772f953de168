package zfs

import (
	"errors"
	"fmt"
	"strings"
)

// Kind classifies a failed zfs or zpool command so callers can decide what
// to do without parsing stderr themselves.
type Kind int

const (
	KindOther Kind = iota
	KindNotFound
	KindAlreadyExists
	KindBusy
	KindOutOfSpace
	KindQuotaExceeded
	KindHasDependents
	KindUnsupported
	KindInvalid
	// KindUnavailable: ZFS itself did not answer (the zfs-fuse daemon is
	// down, the kernel module is not loaded). Nothing was done; a retry
	// once ZFS is back may succeed.
	KindUnavailable
)

func (k Kind) String() string {
	switch k {
	case KindNotFound:
		return "not found"
	case KindAlreadyExists:
		return "already exists"
	case KindBusy:
		return "busy"
	case KindOutOfSpace:
		return "out of space"
	case KindQuotaExceeded:
		return "quota exceeded"
	case KindHasDependents:
		return "has dependents"
	case KindUnsupported:
		return "unsupported"
	case KindInvalid:
		return "invalid"
	case KindUnavailable:
		return "ZFS unavailable"
	}
	return "failed"
}

// Sentinels for errors.Is; every *Error of the matching kind "is" one.
var (
	ErrNotFound      = &Error{Kind: KindNotFound}
	ErrAlreadyExists = &Error{Kind: KindAlreadyExists}
	ErrBusy          = &Error{Kind: KindBusy}
	ErrOutOfSpace    = &Error{Kind: KindOutOfSpace}
	ErrQuotaExceeded = &Error{Kind: KindQuotaExceeded}
	ErrHasDependents = &Error{Kind: KindHasDependents}
	ErrUnsupported   = &Error{Kind: KindUnsupported}
	ErrInvalid       = &Error{Kind: KindInvalid}
	ErrUnavailable   = &Error{Kind: KindUnavailable}
)

// Error is a failed zfs/zpool call: what was run, on what, and what the tool said.
type Error struct {
	Kind   Kind
	Op     string // e.g. "zfs destroy"
	Target string // dataset, snapshot or pool
	Msg    string // the tool's own words (stderr, trimmed)
}

func (e *Error) Error() string {
	s := e.Op
	if e.Target != "" {
		s += " " + e.Target
	}
	s += ": " + e.Kind.String()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// Is matches sentinels by kind only.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Op == "" && t.Target == "" && t.Msg == "" && t.Kind == e.Kind
}

// IsKind reports whether err is a *Error of kind k.
func IsKind(err error, k Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}

// The tools' messages, from OpenZFS 2.x and zfs-fuse 0.7 (see testdata/).
// Order matters: the first match wins.
var classifiers = []struct {
	needle string
	kind   Kind
}{
	// ZFS not answering at all comes first: its messages name paths that
	// "do not exist" too.
	{"failed to initialize zfs library", KindUnavailable}, // both, with the lines below
	{"zfs-fuse daemon is running", KindUnavailable},       // zfs-fuse: daemon down
	{"modules are not loaded", KindUnavailable},           // OpenZFS: no kernel module
	{"unable to open /dev/zfs", KindUnavailable},          // OpenZFS: no control device
	{"dataset does not exist", KindNotFound},
	{"no such pool", KindNotFound},
	{"could not find any snapshots", KindNotFound},
	{"does not exist", KindNotFound},
	{"no such dataset", KindNotFound},
	{"does not have any resumable receive state", KindNotFound},
	{"already exists", KindAlreadyExists},
	{"has children", KindHasDependents},
	{"has dependent clones", KindHasDependents},
	{"is busy", KindBusy},
	{"is already mounted", KindBusy},                // mount -t zfs of a dataset mounted elsewhere
	{"contains partially-complete state", KindBusy}, // an interrupted zfs recv -s holds the target
	{"device busy", KindBusy},
	{"out of space", KindOutOfSpace},
	{"no space left", KindOutOfSpace},
	{"quota exceeded", KindQuotaExceeded},
	{"invalid option", KindUnsupported},
	{"unrecognized command", KindUnsupported},
	{"function not implemented", KindUnsupported},
	{"not supported", KindUnsupported},
	{"pool must be upgraded", KindUnsupported},
	{"must be one of", KindInvalid},
	{"bad property", KindInvalid},
	{"invalid property", KindInvalid},
	{"bad numeric value", KindInvalid},
	{"invalid character", KindInvalid},
	{"size is less than current used", KindInvalid},
}

// classify turns a tool's stderr into a Kind.
func classify(stderr string) Kind {
	s := strings.ToLower(stderr)
	for _, c := range classifiers {
		if strings.Contains(s, c.needle) {
			return c.kind
		}
	}
	return KindOther
}

func newError(op, target, stderr string, runErr error) *Error {
	msg := strings.TrimSpace(stderr)
	// zfs-fuse's "Defaulting to 4K blocksize" line is noise on every zpool create.
	lines := strings.Split(msg, "\n")
	kept := lines[:0]
	for _, l := range lines {
		// Trimmed: the first line kept is trimmed with the rest of the
		// message, so an indented noise line would otherwise come back
		// as the message's first words (found by FuzzClassify).
		if !strings.HasPrefix(strings.TrimSpace(l), "Defaulting to 4K blocksize") {
			kept = append(kept, l)
		}
	}
	msg = strings.TrimSpace(strings.Join(kept, "\n"))
	if msg == "" && runErr != nil {
		msg = runErr.Error()
	}
	return &Error{Kind: classify(msg), Op: op, Target: target, Msg: msg}
}

// wrap annotates a non-zfs failure (for example a broken pipe in a send).
func wrap(op, target string, err error) error {
	if err == nil {
		return nil
	}
	var ze *Error
	if errors.As(err, &ze) {
		return err
	}
	return &Error{Kind: KindOther, Op: op, Target: target, Msg: fmt.Sprint(err)}
}
