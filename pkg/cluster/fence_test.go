package cluster

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The fence: a pool held by a node that is still heard from cannot be
// claimed by another; a released pool, or one whose holder went quiet past
// the stale period, can.
func TestPoolIsHeldByOneNodeAtATime(t *testing.T) {
	ctx := context.Background()
	v := NewMemory()
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	stale := 10 * time.Second
	claim := func(node string, at time.Time) error {
		return v.PutPool(ctx, Pool{Name: "p", Node: node, LastHeartbeat: at}, stale)
	}
	if err := claim("a", t0); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := claim("a", t0.Add(time.Second)); err != nil {
		t.Fatalf("holder's heartbeat: %v", err)
	}
	if err := claim("b", t0.Add(5*time.Second)); !errors.Is(err, ErrHeld) {
		t.Fatalf("claim while held and fresh: got %v, want ErrHeld", err)
	}
	if err := v.ReleasePool(ctx, "p", "b"); err != nil {
		t.Fatal(err)
	}
	if p, _ := v.GetPool(ctx, "p"); p.Node != "a" {
		t.Fatalf("a release by a node that does not hold the pool changed its holder to %q", p.Node)
	}
	if err := v.ReleasePool(ctx, "p", "a"); err != nil {
		t.Fatal(err)
	}
	if err := claim("b", t0.Add(6*time.Second)); err != nil {
		t.Fatalf("claim after a clean release: %v", err)
	}
	// b goes quiet; a may take the pool back only once b is stale.
	if err := claim("a", t0.Add(15*time.Second)); !errors.Is(err, ErrHeld) {
		t.Fatalf("claim 9s after the holder's last heartbeat: got %v, want ErrHeld", err)
	}
	if err := claim("a", t0.Add(16*time.Second)); err != nil {
		t.Fatalf("claim once the holder is stale: %v", err)
	}
	if err := claim("b", t0.Add(17*time.Second)); !errors.Is(err, ErrHeld) {
		t.Fatalf("the fenced-out node's heartbeat: got %v, want ErrHeld", err)
	}
}
