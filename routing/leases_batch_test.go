package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSync is a syncFile for tests that counts its calls, can hold the
// write of one batch in its file fsync until released, and can fail the
// writes of chosen batches. Writes are numbered from 1 in the order their
// file fsyncs happen: one per append to the journal, two per compaction
// (the snapshot, whose directory fsync is not counted, and the emptied
// journal).
type fakeSync struct {
	block   int           // number of the write to hold, 0 for none
	fail    map[int]error // by write number
	entered chan struct{} // receives once the held write is in its fsync
	release chan struct{} // closed by the test to let the held write go on

	calls  atomic.Int32 // fsyncs, file and directory
	writes atomic.Int32 // file fsyncs
}

func newFakeSync(block int, fail map[int]error) *fakeSync {
	return &fakeSync{block: block, fail: fail, entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (s *fakeSync) sync(f *os.File) error {
	s.calls.Add(1)
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return nil
	}
	w := int(s.writes.Add(1))
	if w == s.block {
		s.entered <- struct{}{}
		<-s.release
	}
	return s.fail[w]
}

// waitCounter counts the calls that wait for a batch (Pool.onWait), so
// that a test knows when the calls it started have joined a batch.
type waitCounter chan struct{}

func watchWaits(p *Pool) waitCounter {
	c := make(waitCounter, 1000)
	p.onWait = func() { c <- struct{}{} }
	return c
}

// await returns once n more calls wait for a batch.
func (c waitCounter) await(n int) {
	for range n {
		<-c
	}
}

type assignResult struct {
	identity string
	addr     netip.Addr
	err      error
}

// goAssign runs Assign(identity) in a goroutine and sends the result to
// results.
func goAssign(p *Pool, identity string, results chan<- assignResult) {
	go func() {
		a, err := p.Assign(identity)
		results <- assignResult{identity, a, err}
	}()
}

// clientAddrs returns the first n client addresses of p, in order.
func clientAddrs(p *Pool, n int) []netip.Addr {
	var as []netip.Addr
	for i := range n {
		as = append(as, addOffset(p.first, uint64(i)))
	}
	return as
}

// TestLeasesGroupCommit starts 200 new identities while a write is held
// in its fsync, so that all but the first pile up behind it: they must
// share one write, get distinct addresses in order, and all be on disk.
func TestLeasesGroupCommit(t *testing.T) {
	tests := []struct {
		name       string
		subnet     string
		identities int
	}{
		{name: "IPv4", subnet: "100.64.0.0/16", identities: 200},
		{name: "IPv6", subnet: "fd00:64::/112", identities: 200},
		{name: "two", subnet: "100.64.0.0/24", identities: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			p := mustOpenPool(t, tt.subnet, path)
			fs := newFakeSync(1, nil)
			p.syncFile = fs.sync
			waits := watchWaits(p)
			results := make(chan assignResult, tt.identities)

			goAssign(p, "client-0", results)
			<-fs.entered // client-0's write is in flight
			waits.await(1)
			for i := 1; i < tt.identities; i++ {
				goAssign(p, fmt.Sprintf("client-%d", i), results)
			}
			waits.await(tt.identities - 1) // all gathered behind the held write
			if got := p.Len(); got != 0 {
				t.Errorf("Len() while the first write is held = %d, want 0 (nothing is durable yet)", got)
			}
			close(fs.release)

			got := map[string]netip.Addr{}
			for range tt.identities {
				r := <-results
				if r.err != nil {
					t.Fatalf("Assign(%s): %v", r.identity, r.err)
				}
				got[r.identity] = r.addr
			}
			if got["client-0"] != p.first {
				t.Errorf("client-0 got %v, want the first client address %v", got["client-0"], p.first)
			}
			addrs := slices.SortedFunc(func(yield func(netip.Addr) bool) {
				for _, a := range got {
					if !yield(a) {
						return
					}
				}
			}, netip.Addr.Compare)
			if want := clientAddrs(p, tt.identities); !slices.Equal(addrs, want) {
				t.Errorf("addresses handed out = %v, want the first %d client addresses, each once", addrs, tt.identities)
			}
			// Without batching, 200 new identities cost 200 fsyncs.
			if n := fs.calls.Load(); n > 2 {
				t.Errorf("%d new identities made %d fsyncs, want at most 2 (two appends)", tt.identities, n)
			}
			q := mustOpenPool(t, tt.subnet, path)
			if q.Len() != tt.identities {
				t.Errorf("reopened pool has %d leases, want %d", q.Len(), tt.identities)
			}
			for id, a := range got {
				if qa, ok := q.Lookup(id); !ok || qa != a {
					t.Errorf("reopened Lookup(%s) = %v, %v; want %v", id, qa, ok, a)
				}
			}
		})
	}
}

// TestLeasesBatchWriteFailure holds the write of bob's lease while carol,
// dave and erin gather in the next batch, and fails one or both writes.
// Exactly the leases of a failed write are lost, their addresses are
// handed out again, and everything else stays.
func TestLeasesBatchWriteFailure(t *testing.T) {
	errDisk := errors.New("simulated I/O error")
	addr := netip.MustParseAddr
	tests := []struct {
		name      string
		fail      map[int]error // by write number: 1 is bob's, 2 the batch behind it
		wantBob   netip.Addr    // invalid: bob's Assign fails
		wantBatch bool          // carol, dave and erin get .4 to .6
		wantFrank netip.Addr    // the next new identity
	}{
		{name: "none fails", wantBob: addr("100.64.0.3"), wantBatch: true, wantFrank: addr("100.64.0.7")},
		{name: "held write fails", fail: map[int]error{1: errDisk}, wantBatch: true, wantFrank: addr("100.64.0.7")},
		{name: "batch behind fails", fail: map[int]error{2: errDisk}, wantBob: addr("100.64.0.3"), wantFrank: addr("100.64.0.4")},
		{name: "both fail", fail: map[int]error{1: errDisk, 2: errDisk}, wantFrank: addr("100.64.0.3")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "leases.json")
			p := mustOpenPool(t, "100.64.0.0/24", path)
			mustAssign(t, p, "alice", "100.64.0.2")
			fs := newFakeSync(1, tt.fail)
			p.syncFile = fs.sync
			waits := watchWaits(p)
			results := make(chan assignResult, 4)

			goAssign(p, "bob", results)
			<-fs.entered
			waits.await(1)
			batch := []string{"carol", "dave", "erin"}
			for _, id := range batch {
				goAssign(p, id, results)
			}
			waits.await(len(batch))
			close(fs.release)

			got := map[string]assignResult{}
			for range 1 + len(batch) {
				r := <-results
				got[r.identity] = r
			}
			check := func(id string, want netip.Addr) {
				t.Helper()
				r := got[id]
				switch {
				case !want.IsValid() && !errors.Is(r.err, errDisk):
					t.Errorf("Assign(%s) = %v, %v; want %v", id, r.addr, r.err, errDisk)
				case want.IsValid() && (r.err != nil || r.addr != want):
					t.Errorf("Assign(%s) = %v, %v; want %v", id, r.addr, r.err, want)
				}
				if a, ok := p.Lookup(id); ok != want.IsValid() || a != want {
					t.Errorf("Lookup(%s) = %v, %v; want %v", id, a, ok, want)
				}
			}
			check("bob", tt.wantBob)
			var batchAddrs []netip.Addr
			for _, id := range batch {
				if tt.wantBatch {
					batchAddrs = append(batchAddrs, got[id].addr)
					check(id, got[id].addr)
				} else {
					check(id, netip.Addr{})
				}
			}
			if tt.wantBatch {
				slices.SortFunc(batchAddrs, netip.Addr.Compare)
				if want := []netip.Addr{addr("100.64.0.4"), addr("100.64.0.5"), addr("100.64.0.6")}; !slices.Equal(batchAddrs, want) {
					t.Errorf("batch got %v, want %v", batchAddrs, want)
				}
			}
			want := leaseText(p)
			checkLeaseFiles(t, path)
			if q := mustOpenPool(t, "100.64.0.0/24", path); leaseText(q) != want {
				t.Errorf("leases on disk:\n%s\nwant (as in memory):\n%s", leaseText(q), want)
			}

			// The disk recovers: the next new identity gets the lowest
			// free address after the last one handed out.
			p.syncFile = (*os.File).Sync
			mustAssign(t, p, "frank", tt.wantFrank.String())
			if q := mustOpenPool(t, "100.64.0.0/24", path); leaseText(q) != leaseText(p) {
				t.Errorf("leases on disk:\n%s\nwant:\n%s", leaseText(q), leaseText(p))
			}
		})
	}
}

// TestLeasesKnownWhileWriting holds a write in its fsync and checks that
// calls about existing leases are answered meanwhile, from memory.
func TestLeasesKnownWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	p := mustOpenPool(t, "100.64.0.0/24", path)
	clock := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	p.now = func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return clock
	}
	mustAssign(t, p, "alice", "100.64.0.2")
	fs := newFakeSync(1, nil)
	p.syncFile = fs.sync
	results := make(chan assignResult, 1)
	goAssign(p, "bob", results)
	<-fs.entered

	clockMu.Lock()
	clock = clock.Add(time.Hour)
	clockMu.Unlock()
	alice := netip.MustParseAddr("100.64.0.2")
	tests := []struct {
		name string
		call func() error
	}{
		{"Assign", func() error {
			if a, err := p.Assign("alice"); err != nil || a != alice {
				return fmt.Errorf("Assign(alice) = %v, %v; want %v", a, err, alice)
			}
			return nil
		}},
		{"Reserve", func() error {
			if err := p.Reserve("alice", alice); err != nil {
				return fmt.Errorf("Reserve(alice, %v) = %v", alice, err)
			}
			return nil
		}},
		{"Lookup", func() error {
			if a, ok := p.Lookup("alice"); !ok || a != alice {
				return fmt.Errorf("Lookup(alice) = %v, %v; want %v", a, ok, alice)
			}
			if a, ok := p.Lookup("bob"); ok {
				return fmt.Errorf("Lookup(bob) during its write = %v; want no lease yet", a)
			}
			return nil
		}},
		{"Len", func() error {
			if n := p.Len(); n != 1 {
				return fmt.Errorf("Len() = %d, want 1", n)
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A call that waited for the held write would never return.
			if err := tt.call(); err != nil {
				t.Error(err)
			}
		})
	}
	close(fs.release)
	if r := <-results; r.err != nil || r.addr != netip.MustParseAddr("100.64.0.3") {
		t.Errorf("Assign(bob) = %v, %v; want 100.64.0.3", r.addr, r.err)
	}
	if n := fs.calls.Load(); n != 1 {
		t.Errorf("%d fsyncs, want 1 (only bob's lease is appended)", n)
	}
	// alice's reconnect during the write is saved by the next one.
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	q := mustOpenPool(t, "100.64.0.0/24", path)
	if l := q.byID["alice"]; !l.last.Equal(clock) {
		t.Errorf("alice's last-assigned time on disk = %v, want %v", l.last, clock)
	}
}

// TestLeasesSameIdentityConcurrent makes concurrent calls for one new
// identity: they share one lease, and one outcome.
func TestLeasesSameIdentityConcurrent(t *testing.T) {
	errDisk := errors.New("simulated I/O error")
	tests := []struct {
		name   string
		behind bool  // both calls gather behind another identity's held write; else the first leads
		fail   error // of dup's write
	}{
		{name: "first leads"},
		{name: "both behind a write", behind: true},
		{name: "first leads, write fails", fail: errDisk},
		{name: "both behind a write, write fails", behind: true, fail: errDisk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			p := mustOpenPool(t, "100.64.0.0/24", path)
			dupWrite := 1
			if tt.behind {
				dupWrite = 2
			}
			fs := newFakeSync(1, map[int]error{dupWrite: tt.fail})
			p.syncFile = fs.sync
			waits := watchWaits(p)
			results := make(chan assignResult, 3)
			const calls = 2
			if tt.behind {
				goAssign(p, "other", results)
				<-fs.entered
				waits.await(1)
				for range calls {
					goAssign(p, "dup", results)
				}
				waits.await(calls)
			} else {
				goAssign(p, "dup", results)
				<-fs.entered
				waits.await(1)
				goAssign(p, "dup", results)
				waits.await(1)
			}
			close(fs.release)

			n := calls
			if tt.behind {
				n++ // other
			}
			var dups []assignResult
			for range n {
				if r := <-results; r.identity == "dup" {
					dups = append(dups, r)
				} else if r.err != nil {
					t.Errorf("Assign(%s): %v", r.identity, r.err)
				}
			}
			for _, r := range dups {
				if tt.fail != nil && !errors.Is(r.err, tt.fail) {
					t.Errorf("Assign(dup) = %v, %v; want %v", r.addr, r.err, tt.fail)
				}
				if tt.fail == nil && (r.err != nil || r.addr != dups[0].addr) {
					t.Errorf("Assign(dup) calls got %v, %v and %v; want one address", r.addr, r.err, dups[0].addr)
				}
			}
			wantLen := n - calls // other
			if tt.fail == nil {
				wantLen++ // dup, once
			}
			if n := p.Len(); n != wantLen {
				t.Errorf("Len() = %d, want %d:\n%s", n, wantLen, leaseText(p))
			}
			if q := mustOpenPool(t, "100.64.0.0/24", path); leaseText(q) != leaseText(p) {
				t.Errorf("leases on disk:\n%s\nwant:\n%s", leaseText(q), leaseText(p))
			}
		})
	}
}

// TestLeasesBatchWithReserveAndPin checks that Reserve joins a batch of
// Assigns, and that Reserve and Pin wait for a new lease that is in their
// way before they decide.
func TestLeasesBatchWithReserveAndPin(t *testing.T) {
	addr := netip.MustParseAddr
	tests := []struct {
		name string
		// call runs while x's write is held and y's lease (100.64.0.3)
		// waits behind it, and returns its outcome as a string.
		call       func(p *Pool) string
		waits      bool // call waits for y's batch (Pin waits for writeMu first)
		want       string
		wantLeases string
		maxWrites  int32
	}{
		{
			name: "Reserve joins the batch",
			call: func(p *Pool) string {
				return fmt.Sprint(p.Reserve("r", addr("100.64.0.10")))
			},
			waits:      true, // so that it shares y's write
			want:       "<nil>",
			wantLeases: "100.64.0.10 r\n100.64.0.2 x\n100.64.0.3 y",
			maxWrites:  2,
		},
		{
			name: "Reserve of a pending address",
			call: func(p *Pool) string {
				err := p.Reserve("r", addr("100.64.0.3"))
				return fmt.Sprint(errors.Is(err, ErrAddrInUse))
			},
			waits:      true,
			want:       "true",
			wantLeases: "100.64.0.2 x\n100.64.0.3 y",
			maxWrites:  2,
		},
		{
			name: "Reserve of a pending identity",
			call: func(p *Pool) string {
				return fmt.Sprint(p.Reserve("y", addr("100.64.0.3")))
			},
			waits:      true,
			want:       "<nil>",
			wantLeases: "100.64.0.2 x\n100.64.0.3 y",
			maxWrites:  2,
		},
		{
			name: "Pin of a pending address",
			call: func(p *Pool) string {
				evicted, err := p.Pin("p", addr("100.64.0.3"))
				return fmt.Sprint(evicted, " ", err)
			},
			want:       "y <nil>",
			wantLeases: "100.64.0.2 x\n100.64.0.3 p",
			maxWrites:  3,
		},
		{
			name: "Pin of a pending identity",
			call: func(p *Pool) string {
				evicted, err := p.Pin("y", addr("100.64.0.9"))
				return fmt.Sprint(evicted, " ", err)
			},
			want:       " <nil>",
			wantLeases: "100.64.0.2 x\n100.64.0.9 y",
			maxWrites:  3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Pin waits for writeMu, and whether it gets it before y's
			// leader (and so sees y pending) or after (and sees y
			// leased) is up to the scheduler; the outcome must be the
			// same, so run it a few times.
			for range 10 {
				path := filepath.Join(t.TempDir(), "leases.json")
				p := mustOpenPool(t, "100.64.0.0/24", path)
				fs := newFakeSync(1, nil)
				p.syncFile = fs.sync
				waits := watchWaits(p)
				results := make(chan assignResult, 2)
				goAssign(p, "x", results)
				<-fs.entered
				waits.await(1)
				goAssign(p, "y", results)
				waits.await(1)
				outcome := make(chan string)
				go func() { outcome <- tt.call(p) }()
				if tt.waits {
					waits.await(1)
				}
				close(fs.release)
				if got := <-outcome; got != tt.want {
					t.Fatalf("outcome %q, want %q", got, tt.want)
				}
				for range 2 {
					if r := <-results; r.err != nil {
						t.Fatalf("Assign(%s): %v", r.identity, r.err)
					}
				}
				if got := leaseText(p); got != tt.wantLeases {
					t.Fatalf("leases:\n%s\nwant:\n%s", got, tt.wantLeases)
				}
				if q := mustOpenPool(t, "100.64.0.0/24", path); leaseText(q) != tt.wantLeases {
					t.Fatalf("leases on disk:\n%s\nwant:\n%s", leaseText(q), tt.wantLeases)
				}
				if n := fs.writes.Load(); n > tt.maxWrites {
					t.Fatalf("%d writes, want at most %d", n, tt.maxWrites)
				}
			}
		})
	}
}

// TestAppendLeaseFile checks that the hand-written encoder writes what
// json.MarshalIndent writes, so the file stays the same format.
func TestAppendLeaseFile(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	v4 := netip.MustParseAddr("100.64.0.2")
	tests := []struct {
		name    string
		subnet  string
		gen     uint64
		entries []leaseEntry
		wantErr bool
	}{
		{name: "empty", subnet: "100.64.0.0/24"},
		{name: "empty, generation 1", subnet: "100.64.0.0/24", gen: 1},
		{name: "plain", subnet: "100.64.0.0/24", gen: 1<<64 - 1, entries: []leaseEntry{
			{Identity: "CN=alice,O=Example", Addr: v4, FirstAssigned: t0, LastAssigned: t0.Add(time.Hour)},
			{Identity: "bob", Addr: v4.Next(), FirstAssigned: t0, LastAssigned: t0},
		}},
		{name: "IPv6 and zero times", subnet: "fd00:64::/64", entries: []leaseEntry{
			{Identity: "carol", Addr: netip.MustParseAddr("fd00:64::2")},
		}},
		{name: "escaped identities", subnet: "100.64.0.0/24", entries: []leaseEntry{
			{Identity: `quote " backslash \ slash /`, Addr: v4},
			{Identity: "html <b>&amp;</b>", Addr: v4},
			{Identity: "control \x00\x01\t\n\r\x1f\x7f", Addr: v4},
			{Identity: "CN=Jürgen 日本", Addr: v4},
			{Identity: "invalid \xff\xfe utf-8", Addr: v4},
			{Identity: "separators \u2028\u2029", Addr: v4},
		}},
		{name: "other zones and nanoseconds", subnet: "100.64.0.0/24", entries: []leaseEntry{
			{Identity: "dave", Addr: v4, FirstAssigned: time.Date(2026, 1, 2, 3, 4, 5, 600700800, time.FixedZone("", 5*3600+1800)), LastAssigned: time.Date(1999, 12, 31, 23, 59, 59, 1, time.FixedZone("", -8*3600))},
		}},
		{name: "year out of range", subnet: "100.64.0.0/24", entries: []leaseEntry{
			{Identity: "erin", Addr: v4, FirstAssigned: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subnet := netip.MustParsePrefix(tt.subnet)
			want, wantErr := json.MarshalIndent(&leaseFile{Version: LeasesVersion, Subnet: subnet, Generation: tt.gen, Leases: append([]leaseEntry{}, tt.entries...)}, "", "  ")
			const prefix = "kept"
			got, err := appendLeaseFile([]byte(prefix), subnet, tt.gen, tt.entries)
			if (err != nil) != tt.wantErr || (wantErr != nil) != tt.wantErr {
				t.Fatalf("appendLeaseFile error %v, MarshalIndent error %v; want errors %v", err, wantErr, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if string(got[:len(prefix)]) != prefix {
				t.Errorf("appendLeaseFile lost the bytes it appends to: %q", got[:len(prefix)])
			}
			got = got[len(prefix):]
			if want = append(want, '\n'); string(got) != string(want) {
				t.Errorf("appendLeaseFile:\n%s\nwant (MarshalIndent):\n%s", got, want)
			}
			f, err := parseLeases(got)
			if err != nil || len(f.Leases) != len(tt.entries) || f.Generation != tt.gen {
				t.Errorf("parseLeases(appendLeaseFile) = %v, %v", f, err)
			}
		})
	}
}

// TestSortEntries checks the address sort of a write, including entries
// that break its assumptions (which must never be dropped).
func TestSortEntries(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("100.64.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	e := func(id, a string) leaseEntry { return leaseEntry{Identity: id, Addr: netip.MustParseAddr(a)} }
	tests := []struct {
		name    string
		entries []leaseEntry
		want    string // identities in order
	}{
		{name: "none"},
		{name: "shuffled", entries: []leaseEntry{e("c", "100.64.0.200"), e("a", "100.64.0.2"), e("d", "100.64.0.254"), e("b", "100.64.0.10")}, want: "abcd"},
		{name: "duplicate address", entries: []leaseEntry{e("b", "100.64.0.9"), e("c", "100.64.0.9"), e("a", "100.64.0.3")}, want: "abc"},
		{name: "not a client address", entries: []leaseEntry{e("c", "100.64.0.9"), e("a", "100.64.0.1"), e("b", "100.64.0.2"), e("d", "fd00::2")}, want: "abcd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			for _, e := range p.sortEntries(slices.Clone(tt.entries)) {
				got += e.Identity
			}
			if got != tt.want {
				t.Errorf("sorted %q, want %q", got, tt.want)
			}
		})
	}
}
