package routing

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestObserveWrites: the observer hears of each durable append with the
// leases it holds, a batch of new identities as one append, and of
// nothing else: not a returning identity, not a failed append.
func TestObserveWrites(t *testing.T) {
	p := mustOpenPool(t, "100.64.0.0/24", filepath.Join(t.TempDir(), "leases.json"))
	type write struct {
		d      time.Duration
		leases int
	}
	var mu sync.Mutex
	var got []write
	p.ObserveWrites(func(d time.Duration, leases int) {
		mu.Lock()
		got = append(got, write{d, leases})
		mu.Unlock()
	})
	writes := func() []write {
		mu.Lock()
		defer mu.Unlock()
		return append([]write(nil), got...)
	}

	mustAssign(t, p, "laptop", "100.64.0.2")
	mustAssign(t, p, "laptop", "100.64.0.2") // returning: no write
	if w := writes(); len(w) != 1 || w[0].leases != 1 || w[0].d <= 0 {
		t.Fatalf("after one new and one returning identity: writes %+v, want one of one lease", w)
	}

	// Three new identities that arrive while a write is in flight share
	// the next append.
	release := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	p.writeFile = func(f *os.File, b []byte, off int64) (int, error) {
		once.Do(func() { close(blocked); <-release })
		return f.WriteAt(b, off)
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.Assign("phone") })
	<-blocked
	waiting := make(chan struct{}, 3)
	p.onWait = func() { waiting <- struct{}{} }
	for _, id := range []string{"tablet", "desktop", "watch"} {
		wg.Go(func() { p.Assign(id) })
	}
	for range 3 {
		<-waiting
	}
	close(release)
	wg.Wait()
	p.onWait = nil
	if w := writes(); len(w) != 3 || w[1].leases != 1 || w[2].leases != 3 {
		t.Fatalf("after one write held up and three new identities behind it: writes %+v, want leases 1, 1, 3", w)
	}

	p.writeFile = func(*os.File, []byte, int64) (int, error) { return 0, errors.New("disk full") }
	if _, err := p.Assign("printer"); err == nil {
		t.Fatal("Assign with a failing journal succeeded")
	}
	if w := writes(); len(w) != 3 {
		t.Fatalf("a failed append was observed: writes %+v", w)
	}
	p.writeFile = (*os.File).WriteAt

	if _, err := p.Pin("camera", netip.MustParseAddr("100.64.0.200")); err != nil {
		t.Fatal(err)
	}
	if w := writes(); len(w) != 4 || w[3].leases != 1 {
		t.Fatalf("after a Pin: writes %+v, want a fourth of one lease", w)
	}

	p.ObserveWrites(nil)
	if _, err := p.Assign("phone2"); err != nil {
		t.Fatal(err)
	}
	if w := writes(); len(w) != 4 {
		t.Fatalf("observed after ObserveWrites(nil): %+v", w)
	}
}
