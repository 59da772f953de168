package operator

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Mode says where pools live.
type Mode string

const (
	// ModeLocal keeps pools in host folders; the operator does nothing.
	ModeLocal Mode = "local"
	// ModePVPerNode keeps each node's pool on a backing PVC.
	ModePVPerNode Mode = "pvPerNode"
)

// Defaults for keys the ConfigMap leaves out.
const (
	DefaultBackingSize = "10Gi"
	DefaultOrphanGrace = 10 * time.Minute
	DefaultMaxAutoPVCs = 16
)

// Config is the operator's configuration, read from the ConfigMap.
type Config struct {
	Mode Mode
	// StorageClass of new backing PVCs; "" leaves it to the cluster default.
	StorageClass string
	Size         resource.Quantity
	// NodeSelector picks the nodes that get a pool.
	NodeSelector labels.Selector
	// OrphanGrace is how long a PVC whose node is gone waits for that node
	// (or a replacement) before it is adopted by an existing node.
	OrphanGrace time.Duration
	// MaxAutoPVCs caps the backing PVCs the operator creates on its own.
	MaxAutoPVCs int
}

// DefaultConfig is the configuration of an empty ConfigMap.
func DefaultConfig() Config {
	return Config{
		Mode:         ModeLocal,
		Size:         resource.MustParse(DefaultBackingSize),
		NodeSelector: labels.Everything(),
		OrphanGrace:  DefaultOrphanGrace,
		MaxAutoPVCs:  DefaultMaxAutoPVCs,
	}
}

// ParseConfig reads a ConfigMap's data. Every bad key is reported, so one
// look at the Event shows everything to fix.
func ParseConfig(data map[string]string) (Config, error) {
	cfg := DefaultConfig()
	var errs []error
	bad := func(key, value string, why string) {
		errs = append(errs, fmt.Errorf("%s %q: %s", key, value, why))
	}
	if v, ok := data[KeyMode]; ok && v != "" {
		switch Mode(v) {
		case ModeLocal, ModePVPerNode:
			cfg.Mode = Mode(v)
		default:
			bad(KeyMode, v, fmt.Sprintf("want %q or %q", ModeLocal, ModePVPerNode))
		}
	}
	if v := data[KeyBackingStorageClass]; v != "" {
		if msgs := validation.IsDNS1123Subdomain(v); len(msgs) > 0 {
			bad(KeyBackingStorageClass, v, msgs[0])
		} else {
			cfg.StorageClass = v
		}
	}
	if v := data[KeyBackingSize]; v != "" {
		q, err := resource.ParseQuantity(v)
		switch {
		case err != nil:
			bad(KeyBackingSize, v, err.Error())
		case q.Sign() <= 0:
			bad(KeyBackingSize, v, "must be positive")
		default:
			cfg.Size = q
		}
	}
	if v := data[KeyNodeSelector]; v != "" {
		sel, err := labels.Parse(v)
		if err != nil {
			bad(KeyNodeSelector, v, err.Error())
		} else {
			cfg.NodeSelector = sel
		}
	}
	if v := data[KeyOrphanGrace]; v != "" {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			bad(KeyOrphanGrace, v, err.Error())
		case d < 0:
			bad(KeyOrphanGrace, v, "must not be negative")
		default:
			cfg.OrphanGrace = d
		}
	}
	if v := data[KeyMaxAutoPVCs]; v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			bad(KeyMaxAutoPVCs, v, "not a whole number")
		case n < 0:
			bad(KeyMaxAutoPVCs, v, "must not be negative")
		default:
			cfg.MaxAutoPVCs = n
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}
