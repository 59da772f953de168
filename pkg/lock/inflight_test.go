package lock

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func TestTryAcquire(t *testing.T) {
	l := New()
	rel := l.TryAcquire("a", "b")
	if rel == nil {
		t.Fatal("first acquire refused")
	}
	if l.TryAcquire("b") != nil {
		t.Fatal("b acquired twice")
	}
	if l.TryAcquire("c", "a") != nil {
		t.Fatal("a acquired twice through a multi-key acquire")
	}
	if l.Held() != 2 {
		t.Fatalf("held %d keys, want 2 (a refused multi-key acquire must take nothing)", l.Held())
	}
	rel()
	if l.Held() != 0 {
		t.Fatalf("held %d after release", l.Held())
	}
	if r := l.TryAcquire("a"); r == nil {
		t.Fatal("a not reacquirable after release")
	} else {
		r()
	}
}

func TestOneWinnerUnderContention(t *testing.T) {
	l := New()
	var wins, refused atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	release := make(chan struct{})
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if r := l.TryAcquire("k"); r != nil {
				wins.Add(1)
				<-release
				r()
				return
			}
			refused.Add(1)
		}()
	}
	close(start)
	// The winner holds the key until every other goroutine was refused.
	for refused.Load()+wins.Load() < 50 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if wins.Load() != 1 || refused.Load() != 49 {
		t.Fatalf("wins=%d refused=%d, want 1 and 49", wins.Load(), refused.Load())
	}
	if l.Held() != 0 {
		t.Fatal("key still held")
	}
}
