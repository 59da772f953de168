package zfsd

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// StorageClass parameters. They are defined here, once, because every layer
// a dot passes through acts on some of them: the driver checks them all,
// the pool sets compression and branches by clone mode, and the mesh places
// replicas and commits on an interval.
const (
	ParamCloneMode      = "cloneMode"
	ParamCompression    = "compression"
	ParamReplicas       = "replicas"       // copies of each commit, on different nodes
	ParamCommitInterval = "commitInterval" // automatic commits, bounding a failover's loss
	// MetadataPrefix starts the keys the external-provisioner adds with
	// --extra-create-metadata; they are kept for humans, never interpreted.
	MetadataPrefix = "csi.storage.k8s.io/"

	// MaxReplicas bounds replicas: each one is a stream per commit.
	MaxReplicas = 16
	// MinCommitInterval keeps automatic commits from crowding out the
	// replication of the last one.
	MinCommitInterval = 10 * time.Second
)

// Params are a dot's StorageClass parameters, parsed once where they enter
// (the driver, or a pool's stored properties) and carried typed from there.
// The zero value asks for nothing: an instant clone, the pool's own
// compression, the mesh's default replicas and no automatic commits.
type Params struct {
	CloneMode      CloneMode
	Compression    string        // "" leaves the pool's own
	Replicas       int           // 0: the mesh's default
	CommitInterval time.Duration // 0: none
	Metadata       map[string]string
}

// ParamError says which parameter is refused and why. It is ErrInvalid.
type ParamError struct{ Key, Value, Why string }

func (e *ParamError) Error() string {
	return fmt.Sprintf("parameter %s=%q: %s", e.Key, e.Value, e.Why)
}

func (e *ParamError) Unwrap() error { return ErrInvalid }

// ParseParams reads StorageClass parameters. It returns every parameter it
// understood, and an error naming each one it did not, so a reader of what
// a pool stored can keep the rest.
func ParseParams(m map[string]string) (Params, error) {
	var p Params
	var errs []error
	bad := func(k, v, why string) { errs = append(errs, &ParamError{Key: k, Value: v, Why: why}) }
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		switch {
		case k == ParamCloneMode:
			switch CloneMode(v) {
			case CloneInstant, CloneDetached:
				p.CloneMode = CloneMode(v)
			default:
				bad(k, v, fmt.Sprintf("must be %q or %q", CloneInstant, CloneDetached))
			}
		case k == ParamCompression:
			if !validCompression(v) {
				bad(k, v, "must be one of on, off, lzjb, zle, gzip, gzip-1..9, lz4, zstd, zstd-1..19")
				continue
			}
			p.Compression = v
		case k == ParamReplicas:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxReplicas {
				bad(k, v, fmt.Sprintf("must be a whole number from 1 to %d", MaxReplicas))
				continue
			}
			p.Replicas = n
		case k == ParamCommitInterval:
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || (d != 0 && d < MinCommitInterval) {
				bad(k, v, fmt.Sprintf("must be a duration of at least %s (or 0 for none)", MinCommitInterval))
				continue
			}
			p.CommitInterval = d
		case strings.HasPrefix(k, MetadataPrefix):
			if strings.ContainsAny(v, "\x00\n\t") {
				bad(k, v, "has a control character")
				continue
			}
			if p.Metadata == nil {
				p.Metadata = map[string]string{}
			}
			p.Metadata[k] = v
		default:
			errs = append(errs, fmt.Errorf("unknown parameter %q (known: %s, %s, %s, %s, and %s*): %w",
				k, ParamCloneMode, ParamCompression, ParamReplicas, ParamCommitInterval, MetadataPrefix, ErrInvalid))
		}
	}
	return p, errors.Join(errs...)
}

// Map is the parameters' stored and wire form, which ParseParams reads
// back. What asks for nothing (an instant clone, no interval) is left out,
// so two ways of asking for the same dot give the same map.
func (p Params) Map() map[string]string {
	m := maps.Clone(p.Metadata)
	if m == nil {
		m = map[string]string{}
	}
	if p.CloneMode != "" && p.CloneMode != CloneInstant {
		m[ParamCloneMode] = string(p.CloneMode)
	}
	if p.Compression != "" {
		m[ParamCompression] = p.Compression
	}
	if p.Replicas != 0 {
		m[ParamReplicas] = strconv.Itoa(p.Replicas)
	}
	if p.CommitInterval != 0 {
		m[ParamCommitInterval] = p.CommitInterval.String()
	}
	return m
}

// Equal reports whether p and q ask for the same dot.
func (p Params) Equal(q Params) bool {
	return p.Clone() == q.Clone() && p.Compression == q.Compression && p.Replicas == q.Replicas &&
		p.CommitInterval == q.CommitInterval && maps.Equal(p.Metadata, q.Metadata)
}

// Clone is how a branch is made; none asked for is an instant clone.
func (p Params) Clone() CloneMode {
	if p.CloneMode == "" {
		return CloneInstant
	}
	return p.CloneMode
}

// Props are the ZFS properties the parameters set on a new dot's dataset.
func (p Params) Props() map[string]string {
	if p.Compression == "" {
		return nil
	}
	return map[string]string{"compression": p.Compression}
}

func (p Params) copy() Params {
	p.Metadata = maps.Clone(p.Metadata)
	return p
}

var compressionValues = map[string]bool{"on": true, "off": true, "lzjb": true, "gzip": true, "zle": true, "lz4": true, "zstd": true}

func validCompression(v string) bool {
	if compressionValues[v] {
		return true
	}
	if n, ok := strings.CutPrefix(v, "gzip-"); ok {
		return len(n) == 1 && n[0] >= '1' && n[0] <= '9'
	}
	if n, ok := strings.CutPrefix(v, "zstd-"); ok {
		i, err := strconv.Atoi(n)
		return err == nil && strconv.Itoa(i) == n && i >= 1 && i <= 19
	}
	return false
}

// SourceKind says what a dot was branched from.
type SourceKind string

const (
	SourceCommit SourceKind = "snapshot" // a commit, which CSI calls a snapshot
	SourceDot    SourceKind = "volume"   // another dot, which CSI calls a volume
)

// Source is what a dot was branched from; the zero Source is none. Its
// string form, "snapshot:<commit-id>" or "volume:<dot-id>", is what a pool
// stores and what the API carries.
type Source struct {
	Kind SourceKind
	ID   string
}

// IsZero reports whether there is no source: an empty dot.
func (s Source) IsZero() bool { return s.ID == "" }

func (s Source) String() string {
	if s.IsZero() {
		return ""
	}
	return string(s.Kind) + ":" + s.ID
}

// DotID is the dot whose data the branch starts from.
func (s Source) DotID() string {
	if s.Kind == SourceCommit {
		id, _, _ := strings.Cut(s.ID, "@")
		return id
	}
	return s.ID
}

// ParseSource reads a Source's string form; "" is no source.
func ParseSource(str string) (Source, error) {
	if str == "" {
		return Source{}, nil
	}
	kind, id, ok := strings.Cut(str, ":")
	switch SourceKind(kind) {
	case SourceCommit, SourceDot:
		if ok && id != "" {
			return Source{Kind: SourceKind(kind), ID: id}, nil
		}
	}
	return Source{}, fmt.Errorf("source %q: want snapshot:<commit-id> or volume:<dot-id>: %w", str, ErrInvalid)
}
