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
	parseKey(data, KeyMode, bad, parseMode, nil, &cfg.Mode)
	parseKey(data, KeyBackingStorageClass, bad, storageClassName, nil, &cfg.StorageClass)
	parseKey(data, KeyBackingSize, bad, resource.ParseQuantity, positive, &cfg.Size)
	parseKey(data, KeyNodeSelector, bad, func(v string) (labels.Selector, error) { return labels.Parse(v) }, nil, &cfg.NodeSelector)
	parseKey(data, KeyOrphanGrace, bad, time.ParseDuration, notNegative[time.Duration], &cfg.OrphanGrace)
	parseKey(data, KeyMaxAutoPVCs, bad, wholeNumber, notNegative[int], &cfg.MaxAutoPVCs)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// parseKey reads data[key], when it is set, into dst. What parse refuses,
// or check has a reason against, is reported through bad and leaves dst
// at its default.
func parseKey[T any](data map[string]string, key string, bad func(key, value, why string),
	parse func(string) (T, error), check func(T) string, dst *T) {
	v := data[key]
	if v == "" {
		return
	}
	x, err := parse(v)
	switch {
	case err != nil:
		bad(key, v, err.Error())
	case check != nil && check(x) != "":
		bad(key, v, check(x))
	default:
		*dst = x
	}
}

func parseMode(v string) (Mode, error) {
	switch Mode(v) {
	case ModeLocal, ModePVPerNode:
		return Mode(v), nil
	}
	return "", fmt.Errorf("want %q or %q", ModeLocal, ModePVPerNode)
}

func storageClassName(v string) (string, error) {
	if msgs := validation.IsDNS1123Subdomain(v); len(msgs) > 0 {
		return "", errors.New(msgs[0])
	}
	return v, nil
}

func positive(q resource.Quantity) string {
	if q.Sign() <= 0 {
		return "must be positive"
	}
	return ""
}

func notNegative[T int | time.Duration](x T) string {
	if x < 0 {
		return "must not be negative"
	}
	return ""
}

func wholeNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("not a whole number")
	}
	return n, nil
}
