package cluster

import (
	"context"
	"fmt"
	"sort"
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
	out := make([]Pool, 0, len(m.pools))
	for _, p := range m.pools {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *Memory) GetPool(_ context.Context, name string) (Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pools[name]
	if !ok {
		return Pool{}, fmt.Errorf("pool %s: %w", name, ErrNotFound)
	}
	return p, nil
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
	d, ok := m.dots[id]
	if !ok {
		return Dot{}, fmt.Errorf("dot %s: %w", id, ErrNotFound)
	}
	return copyDot(d), nil
}

func (m *Memory) ListDots(context.Context) ([]Dot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Dot, 0, len(m.dots))
	for _, d := range m.dots {
		out = append(out, copyDot(d))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
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

func (m *Memory) Event(_ context.Context, dotID, reason, message string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Events = append(m.Events, reason+": "+message)
	klog.InfoS("event", "dot", dotID, "reason", reason, "message", message)
}
