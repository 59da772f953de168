package zfsd

import (
	"context"
	"sort"
	"sync"
)

// Set is the pools one node serves. In local mode it holds one pool for the
// life of the process; in PV-per-node mode pools join as their pool pods
// arrive on the node and leave when they are exported.
type Set struct {
	mu    sync.RWMutex
	pools map[string]*Pool
}

// NewSet returns a set holding pools.
func NewSet(pools ...*Pool) *Set {
	s := &Set{pools: map[string]*Pool{}}
	for _, p := range pools {
		s.pools[p.Name()] = p
	}
	return s
}

// Add serves p (replacing a pool of the same name).
func (s *Set) Add(p *Pool) {
	s.mu.Lock()
	s.pools[p.Name()] = p
	s.mu.Unlock()
}

// Remove stops serving the named pool.
func (s *Set) Remove(name string) {
	s.mu.Lock()
	delete(s.pools, name)
	s.mu.Unlock()
}

// Get returns the named pool if this node serves it.
func (s *Set) Get(name string) (*Pool, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.pools[name]
	return p, ok
}

// List returns the pools served now, by name.
func (s *Set) List() []*Pool {
	s.mu.RLock()
	out := make([]*Pool, 0, len(s.pools))
	for _, p := range s.pools {
		out = append(out, p)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Pools reports the space of every pool served now.
func (s *Set) Pools(ctx context.Context) ([]PoolInfo, error) {
	var out []PoolInfo
	for _, p := range s.List() {
		i, err := p.Info(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, nil
}
