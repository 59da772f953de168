package cluster

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Memory is the in-memory view: standalone mode and unit tests.
type Memory struct {
	mu      sync.Mutex
	version int64
	pools   map[string]Pool
	dots    map[string]Dot
	Events  []string
}

// NewMemory returns an empty view.
func NewMemory() *Memory {
	return &Memory{pools: map[string]Pool{}, dots: map[string]Dot{}}
}

func (m *Memory) next() string {
	m.version++
	return strconv.FormatInt(m.version, 10)
}

func (m *Memory) PutPool(_ context.Context, p Pool, stale time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := claimable(m.pools[p.Name], p, stale); err != nil {
		return err
	}
	m.pools[p.Name] = p
	return nil
}

func (m *Memory) ReleasePool(_ context.Context, name, node string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.pools[name]; ok {
		if p, ok := released(cur, node); ok {
			m.pools[name] = p
		}
	}
	return nil
}

func (m *Memory) ListPools(context.Context) ([]Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sorted(m.pools, func(p Pool) Pool { return p }), nil
}

func (m *Memory) GetPool(_ context.Context, name string) (Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return get(m.pools, "pool", name, func(p Pool) Pool { return p })
}

func (m *Memory) DeletePool(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pools, name)
	return nil
}

func copyDot(d Dot) Dot {
	d.Replicas = append([]Replica(nil), d.Replicas...)
	if d.Loss != nil {
		l := *d.Loss
		d.Loss = &l
	}
	return d
}

func (m *Memory) CreateDot(_ context.Context, d Dot) (Dot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.dots[d.ID]; ok {
		return Dot{}, fmt.Errorf("dot %s: %w", d.ID, ErrExists)
	}
	d = copyDot(d)
	d.Version = m.next()
	m.dots[d.ID] = d
	return copyDot(d), nil
}

func (m *Memory) GetDot(_ context.Context, id string) (Dot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return get(m.dots, "dot", id, copyDot)
}

func (m *Memory) ListDots(context.Context) ([]Dot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sorted(m.dots, copyDot), nil
}

func (m *Memory) UpdateDot(_ context.Context, d Dot) (Dot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.dots[d.ID]
	if !ok {
		return Dot{}, fmt.Errorf("dot %s: %w", d.ID, ErrNotFound)
	}
	if cur.Version != d.Version {
		return Dot{}, fmt.Errorf("dot %s at version %s, now %s: %w", d.ID, d.Version, cur.Version, ErrConflict)
	}
	d = copyDot(d)
	d.Version = m.next()
	m.dots[d.ID] = d
	return copyDot(d), nil
}

func (m *Memory) DeleteDot(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.dots, id)
	return nil
}

// get returns a copy of the record under key.
func get[T any](records map[string]T, kind, key string, copyOf func(T) T) (T, error) {
	r, ok := records[key]
	if !ok {
		var zero T
		return zero, fmt.Errorf("%s %s: %w", kind, key, ErrNotFound)
	}
	return copyOf(r), nil
}

// sorted returns copies of the records in key order, as the API server
// lists them.
func sorted[T any](records map[string]T, copyOf func(T) T) []T {
	out := make([]T, 0, len(records))
	for _, k := range slices.Sorted(maps.Keys(records)) {
		out = append(out, copyOf(records[k]))
	}
	return out
}

func (m *Memory) Event(_ context.Context, dotID, reason, message string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Events = append(m.Events, reason+": "+message)
	klog.InfoS("event", "dot", dotID, "reason", reason, "message", message)
}
