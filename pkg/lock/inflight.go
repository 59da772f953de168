// Package lock keeps locking apart from the CSI logic: a set of keys with a
// request in flight. A second request for a key already held is refused
// rather than queued, so the caller can answer Aborted and the CO retries.
package lock

import "sync"

// Inflight is a set of held keys. The zero value is not usable; use New.
type Inflight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

// New returns an empty set.
func New() *Inflight { return &Inflight{keys: map[string]struct{}{}} }

// TryAcquire takes every key, or none if any is held. It returns a release
// function, or nil when some key is already held.
func (l *Inflight) TryAcquire(keys ...string) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if _, held := l.keys[k]; held {
			return nil
		}
	}
	for _, k := range keys {
		l.keys[k] = struct{}{}
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, k := range keys {
			delete(l.keys, k)
		}
	}
}

// Held reports how many keys are held (for tests and metrics).
func (l *Inflight) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
