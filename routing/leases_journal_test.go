package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// journalPool opens a pool on a new leases file in a temporary directory,
// with compaction left to Flush (unless a test lowers compactMin), and
// assigns it the given identities, one batch each.
func journalPool(t *testing.T, identities ...string) (p *Pool, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "leases.json")
	p = mustOpenPool(t, "100.64.0.0/24", path)
	p.compactMin = 1 << 30
	for _, id := range identities {
		if _, err := p.Assign(id); err != nil {
			t.Fatalf("Assign(%s): %v", id, err)
		}
	}
	return p, path
}

// readFile returns the contents of path, failing t if it cannot be read.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// copyLeaseFiles copies the snapshot of path and its journal into a new
// temporary directory, as a crash at that moment would leave them, and
// returns the copy's snapshot path.
func copyLeaseFiles(t *testing.T, path string) string {
	t.Helper()
	cp := filepath.Join(t.TempDir(), filepath.Base(path))
	for _, suffix := range []string{"", journalSuffix} {
		if err := os.WriteFile(cp+suffix, readFile(t, path+suffix), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cp
}

// snapshotGen returns the generation of the snapshot at path.
func snapshotGen(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := parseLeases(readFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return f.Generation
}

// TestJournalTorn damages the journal's last batch as a crash during its
// append may, and checks that OpenPool ignores that batch alone, cuts it
// off, and that the journal then takes appends as before.
func TestJournalTorn(t *testing.T) {
	_, path := journalPool(t, "alice", "bob", "carol")
	want := "100.64.0.2 alice\n100.64.0.3 bob" // carol's batch is the one damaged
	journal := readFile(t, path+journalSuffix)
	lines := strings.SplitAfter(string(journal), "\n")
	// Two lines per batch: carol's are the last two (and "").
	good := strings.Join(lines[:4], "")
	last := strings.Join(lines[4:], "")
	if good+last != string(journal) || !strings.Contains(last, "carol") {
		t.Fatalf("unexpected journal:\n%s", journal)
	}

	tests := []struct {
		name  string
		tail  string // after the whole batches of alice and bob
		carol bool   // carol's batch is whole
	}{
		{name: "whole", tail: last, carol: true}, // the control: nothing ignored
		{name: "no commit line", tail: lines[4]},
		{name: "cut in the commit line", tail: lines[4] + lines[5][:10]},
		{name: "commit line without its newline", tail: strings.TrimSuffix(last, "\n")},
		{name: "cut in the record", tail: lines[4][:20]},
		{name: "cut after one byte", tail: last[:1]},
		{name: "zeros instead of the batch", tail: strings.Repeat("\x00", len(last))},
		{name: "zeros in the middle of the batch", tail: lines[4][:10] + strings.Repeat("\x00", len(lines[4])-10) + lines[5]},
		{name: "zeros at the end of the batch", tail: lines[4] + strings.Repeat("\x00", len(lines[5]))},
		{name: "unparsable last line", tail: lines[4] + "{\"op\":\"commit\",\"gen\":0,\"entr\n"},
		{name: "commit of too many records", tail: lines[4] + `{"op":"commit","gen":0,"entries":2}` + "\n"},
		{name: "record after the last commit", tail: last + lines[4], carol: true},
	}
	// The pool never writes over a failed append that it could not cut
	// off (it compacts first), but should a shorter batch be written over
	// one, what remains of the failed batch after it, from any byte on,
	// is never a whole batch.
	failed := `{"op":"add","identity":"x","addr":"100.64.0.5","at":"2026-05-01T10:00:00Z"}` + "\n" +
		`{"op":"add","identity":"y","addr":"100.64.0.6","at":"2026-05-01T10:00:00Z"}` + "\n" +
		`{"op":"add","identity":"z","addr":"100.64.0.7","at":"2026-05-01T10:00:00Z"}` + "\n" +
		`{"op":"commit","gen":0,"entries":3}` + "\n"
	for k := 1; k < len(failed); k++ {
		tests = append(tests, struct {
			name  string
			tail  string
			carol bool
		}{name: fmt.Sprintf("remains of a failed batch from byte %d", k), tail: last + failed[k:], carol: true})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := copyLeaseFiles(t, path)
			if err := os.WriteFile(cp+journalSuffix, []byte(good+tt.tail), 0o600); err != nil {
				t.Fatal(err)
			}
			q := mustOpenPool(t, "100.64.0.0/24", cp)
			wantLeases, wantJournal := want, good
			if tt.carol {
				wantLeases, wantJournal = want+"\n100.64.0.4 carol", good+last
			}
			if got := leaseText(q); got != wantLeases {
				t.Errorf("leases:\n%s\nwant:\n%s", got, wantLeases)
			}
			if got := readFile(t, cp+journalSuffix); string(got) != wantJournal {
				t.Errorf("journal after OpenPool:\n%q\nwant the whole batches:\n%q", got, wantJournal)
			}
			// The next append starts on a line of its own, and every
			// lease is read back.
			if _, err := q.Assign("dave"); err != nil {
				t.Fatal(err)
			}
			checkLeaseFiles(t, cp)
			if r := mustOpenPool(t, "100.64.0.0/24", cp); leaseText(r) != leaseText(q) {
				t.Errorf("reopened leases:\n%s\nwant:\n%s", leaseText(r), leaseText(q))
			}
		})
	}
}

// TestJournalCorrupt checks that damage anywhere but in the last batch,
// which a crash cannot cause, is reported as corruption, and that OpenPool
// then leaves the files as they are.
func TestJournalCorrupt(t *testing.T) {
	const (
		add    = `{"op":"add","identity":"alice","addr":"100.64.0.2","at":"2026-05-01T10:00:00Z"}` + "\n"
		add2   = `{"op":"add","identity":"bob","addr":"100.64.0.3","at":"2026-05-01T10:00:00Z"}` + "\n"
		commit = `{"op":"commit","gen":0,"entries":1}` + "\n"
	)
	tests := []struct {
		name    string
		journal string
	}{
		// Damage in the last batch is what a crash leaves (see
		// TestJournalTorn): each of these is followed by a whole batch.
		{name: "malformed line", journal: "alice 100.64.0.2\n" + commit + add2 + commit},
		{name: "malformed record", journal: add[:20] + "\n" + commit + add2 + commit},
		{name: "zeros", journal: add + commit + "\x00\x00\x00\n" + commit + add2 + commit},
		{name: "unknown operation", journal: strings.Replace(add, "add", "remove", 1) + commit + add2 + commit},
		{name: "empty identity", journal: strings.Replace(add, "alice", "", 1) + commit + add2 + commit},
		{name: "missing address", journal: strings.Replace(add, `"addr":"100.64.0.2",`, "", 1) + commit + add2 + commit},
		{name: "bad address", journal: strings.Replace(add, "100.64.0.2", "100.64.0.300", 1) + commit + add2 + commit},
		{name: "bad time", journal: strings.Replace(add, "2026-05-01T10:00:00Z", "yesterday", 1) + commit + add2 + commit},
		{name: "commit without generation", journal: add + `{"op":"commit","entries":1}` + "\n" + commit + add2 + commit},
		{name: "commit of no records", journal: `{"op":"commit","gen":0,"entries":0}` + "\n" + add + commit + add2 + commit},
		{name: "commit of too few records", journal: add + add2 + commit + add2 + commit},
		{name: "record lost between batches", journal: add + commit + commit + add2 + commit},
		{name: "generation goes back", journal: add + `{"op":"commit","gen":3,"entries":1}` + "\n" + add2 + commit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, path := journalPool(t)
			snapshot := readFile(t, path)
			if err := os.WriteFile(path+journalSuffix, []byte(tt.journal), 0o600); err != nil {
				t.Fatal(err)
			}
			p, _, err := OpenPool(netip.MustParsePrefix("100.64.0.0/24"), path)
			var ce *CorruptLeasesError
			if !errors.As(err, &ce) || ce.Path != path+journalSuffix {
				t.Fatalf("OpenPool = %v, %v; want a CorruptLeasesError of %s", p, err, path+journalSuffix)
			}
			if msg := err.Error(); !strings.Contains(msg, "remove") {
				t.Errorf("OpenPool error %q does not say what to do", msg)
			}
			if got := readFile(t, path+journalSuffix); string(got) != tt.journal {
				t.Errorf("journal after OpenPool = %q, want it untouched", got)
			}
			if got := readFile(t, path); !bytes.Equal(got, snapshot) {
				t.Errorf("snapshot after OpenPool = %q, want it untouched", got)
			}
		})
	}
}

// TestJournalCrashAfterSnapshot simulates a crash between a compaction's
// rename of the new snapshot and its truncation of the journal, so that
// the journal's batches are in the snapshot too. OpenPool must not apply
// them twice: a lease moved or evicted by Pin since would come back, or
// clash with its successor.
func TestJournalCrashAfterSnapshot(t *testing.T) {
	addr := netip.MustParseAddr
	assign := func(id string) func(*Pool) error {
		return func(p *Pool) error { _, err := p.Assign(id); return err }
	}
	pin := func(id, a string) func(*Pool) error {
		return func(p *Pool) error { _, err := p.Pin(id, addr(a)); return err }
	}
	tests := []struct {
		name  string
		steps []func(*Pool) error // before the compaction that crashes
		want  string
	}{
		{
			name:  "new leases",
			steps: []func(*Pool) error{assign("a"), assign("b"), assign("c")},
			want:  "100.64.0.2 a\n100.64.0.3 b\n100.64.0.4 c",
		},
		{
			name: "pin evicts, then the evicted identity comes back",
			steps: []func(*Pool) error{
				assign("x"),            // .2
				pin("y", "100.64.0.2"), // evicts x
				assign("x"),            // .3
				pin("y", "100.64.0.9"), // frees .2
				assign("z"),            // .4
				pin("x", "100.64.0.2"), // moves x back, frees .3
				func(p *Pool) error { return p.Reserve("w", addr("100.64.0.3")) },
			},
			want: "100.64.0.2 x\n100.64.0.3 w\n100.64.0.4 z\n100.64.0.9 y",
		},
		{
			name: "after a compaction that could not empty the journal",
			steps: []func(*Pool) error{
				assign("x"),
				func(p *Pool) error {
					p.truncFile = func(*os.File, int64) error { return errors.New("simulated truncate error") }
					defer func() { p.truncFile = (*os.File).Truncate }()
					if err := p.Flush(); err == nil {
						return errors.New("Flush with failing truncation = nil")
					}
					return nil
				},
				pin("y", "100.64.0.2"), // compacts first: the journal cannot take appends
				assign("z"),
			},
			want: "100.64.0.2 y\n100.64.0.3 z",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, path := journalPool(t)
			for i, step := range tt.steps {
				if err := step(p); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			if got := leaseText(p); got != tt.want {
				t.Fatalf("leases:\n%s\nwant:\n%s", got, tt.want)
			}
			var crashed string
			p.onSnapshot = func() { crashed = copyLeaseFiles(t, path) }
			if err := p.Flush(); err != nil {
				t.Fatal(err)
			}
			// The copy has the new snapshot with every lease, and the
			// journal of the batches before it.
			batches, _, err := parseJournal(readFile(t, crashed+journalSuffix))
			if err != nil || len(batches) == 0 {
				t.Fatalf("journal at the crash: %d batches, %v; want the batches before the snapshot", len(batches), err)
			}
			q := mustOpenPool(t, "100.64.0.0/24", crashed) // no warnings: nothing applied twice
			if got := leaseText(q); got != tt.want {
				t.Errorf("leases after the crash:\n%s\nwant:\n%s", got, tt.want)
			}
			// Appends after the crash extend the new snapshot.
			if _, err := q.Assign("new"); err != nil {
				t.Fatal(err)
			}
			r := mustOpenPool(t, "100.64.0.0/24", crashed)
			if got, want := leaseText(r), leaseText(q); got != want {
				t.Errorf("leases after a new lease:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestJournalFailedCompaction fails a compaction at each of its fsyncs,
// including the directory's, after which the new snapshot is in place but
// the journal still holds the batches in it: the batches appended after it
// must be read back on top of either snapshot.
func TestJournalFailedCompaction(t *testing.T) {
	errDisk := errors.New("simulated I/O error")
	tests := []struct {
		name     string
		fail     string // which fsync fails: "snapshot", "directory" or "journal"
		wantGen  uint64 // of the snapshot on disk after the failure
		wantBack bool   // the journal keeps its batches
	}{
		{name: "snapshot fsync", fail: "snapshot", wantGen: 0, wantBack: true},
		{name: "directory fsync, after the rename", fail: "directory", wantGen: 1, wantBack: true},
		{name: "journal fsync, after the truncation", fail: "journal", wantGen: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, path := journalPool(t, "a", "b")
			p.syncFile = func(f *os.File) error {
				fi, err := f.Stat()
				if err != nil {
					return err
				}
				switch {
				case fi.IsDir() && tt.fail == "directory",
					!fi.IsDir() && f.Name() == path+journalSuffix && tt.fail == "journal",
					!fi.IsDir() && f.Name() != path+journalSuffix && tt.fail == "snapshot":
					return errDisk
				}
				return f.Sync()
			}
			if err := p.Flush(); !errors.Is(err, errDisk) {
				t.Fatalf("Flush = %v, want %v", err, errDisk)
			}
			p.syncFile = (*os.File).Sync
			if got := snapshotGen(t, path); got != tt.wantGen {
				t.Errorf("snapshot generation after the failure = %d, want %d", got, tt.wantGen)
			}
			journal := readFile(t, path+journalSuffix)
			if back := len(journal) > 0; back != tt.wantBack {
				t.Errorf("journal after the failure = %q; want its batches kept: %v", journal, tt.wantBack)
			}
			// New leases after the failure: a crash now, and after a
			// successful Flush, loses none.
			for _, id := range []string{"c", "d"} {
				if _, err := p.Assign(id); err != nil {
					t.Fatalf("Assign(%s) after a failed compaction: %v", id, err)
				}
			}
			want := "100.64.0.2 a\n100.64.0.3 b\n100.64.0.4 c\n100.64.0.5 d"
			if q := mustOpenPool(t, "100.64.0.0/24", copyLeaseFiles(t, path)); leaseText(q) != want {
				t.Errorf("leases after a crash:\n%s\nwant:\n%s", leaseText(q), want)
			}
			// Replayed on top of the old snapshot instead, as after a
			// crash that lost the rename, the journal gives the same.
			if tt.fail == "directory" {
				cp := copyLeaseFiles(t, path)
				empty, err := appendLeaseFile(nil, p.subnet, 0, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(cp, empty, 0o600); err != nil {
					t.Fatal(err)
				}
				if q := mustOpenPool(t, "100.64.0.0/24", cp); leaseText(q) != want {
					t.Errorf("leases after a crash that lost the rename:\n%s\nwant:\n%s", leaseText(q), want)
				}
			}
			if err := p.Flush(); err != nil {
				t.Fatal(err)
			}
			checkLeaseFiles(t, path)
			if q := mustOpenPool(t, "100.64.0.0/24", path); leaseText(q) != want {
				t.Errorf("leases after Flush:\n%s\nwant:\n%s", leaseText(q), want)
			}
		})
	}
}

// TestJournalAppendFailure fails appends in the ways a disk can: a short
// write, a failed fsync, and either with the truncation that cuts the
// append off failing too. Exactly the failed batch is lost, its address is
// handed out next, and the journal never holds a partial batch that a
// later append would follow.
func TestJournalAppendFailure(t *testing.T) {
	errDisk := errors.New("simulated I/O error")
	errTrunc := errors.New("simulated truncate error")
	tests := []struct {
		name      string
		short     bool // the write stops halfway, else the fsync fails
		truncFail bool // cutting the failed append off fails too
	}{
		{name: "short write"},
		{name: "fsync"},
		{name: "short write, truncation fails", short: true, truncFail: true},
		{name: "fsync, truncation fails", truncFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, path := journalPool(t, "alice")
			before := readFile(t, path+journalSuffix)
			gen := snapshotGen(t, path)
			failing := true
			p.writeFile = func(f *os.File, b []byte, off int64) (int, error) {
				if failing && tt.short {
					n, _ := f.WriteAt(b[:len(b)/2], off)
					return n, errDisk
				}
				return f.WriteAt(b, off)
			}
			p.syncFile = func(f *os.File) error {
				if failing && !tt.short {
					return errDisk
				}
				return f.Sync()
			}
			p.truncFile = func(f *os.File, size int64) error {
				if failing && tt.truncFail {
					return errTrunc
				}
				return f.Truncate(size)
			}
			if a, err := p.Assign("bob"); !errors.Is(err, errDisk) {
				t.Fatalf("Assign(bob) = %v, %v; want %v", a, err, errDisk)
			}
			if a, ok := p.Lookup("bob"); ok {
				t.Errorf("Lookup(bob) after its failed append = %v", a)
			}
			journal := readFile(t, path+journalSuffix)
			if !tt.truncFail && !bytes.Equal(journal, before) {
				t.Errorf("journal after the failed append:\n%q\nwant it cut back to:\n%q", journal, before)
			}
			// Should the server crash now, the journal reads as before
			// the failure, or, if the whole batch made it to the file,
			// with bob's lease, whose address nobody else holds.
			q := mustOpenPool(t, "100.64.0.0/24", copyLeaseFiles(t, path))
			if got := leaseText(q); got != "100.64.0.2 alice" && got != "100.64.0.2 alice\n100.64.0.3 bob" {
				t.Errorf("leases after a crash:\n%s\nwant alice's, and maybe bob's", got)
			}

			// The disk recovers: carol gets bob's address, with an
			// append (after a compaction, if the journal could not be
			// cut back), and a crash right after it keeps her lease.
			failing = false
			var crashed string
			p.onAppend = func() { crashed = copyLeaseFiles(t, path) }
			mustAssign(t, p, "carol", "100.64.0.3")
			if q := mustOpenPool(t, "100.64.0.0/24", crashed); leaseText(q) != "100.64.0.2 alice\n100.64.0.3 carol" {
				t.Errorf("leases after a crash right after carol's append:\n%s\nwant alice's and carol's", leaseText(q))
			}
			if got, want := snapshotGen(t, path) > gen, tt.truncFail; got != want {
				t.Errorf("compacted before carol's append: %v, want %v", got, want)
			}
			checkLeaseFiles(t, path)
			want := "100.64.0.2 alice\n100.64.0.3 carol"
			if q := mustOpenPool(t, "100.64.0.0/24", path); leaseText(q) != want {
				t.Errorf("reopened leases:\n%s\nwant:\n%s", leaseText(q), want)
			}
		})
	}
}

// TestJournalReopen makes many batches of new leases, Reserves and Pins,
// from concurrent callers while reconnects go on, with and without
// compactions in between, and checks that a reopened pool has every lease.
func TestJournalReopen(t *testing.T) {
	tests := []struct {
		name           string
		compactMin     int64
		wantCompaction bool
	}{
		{name: "journal only", compactMin: 1 << 30},
		{name: "compacting", compactMin: 1, wantCompaction: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			p := mustOpenPool(t, "fd00:64::/118", path)
			p.compactMin = tt.compactMin
			var compactions int
			p.onSnapshot = func() { compactions++ } // under writeMu
			const workers, identities = 8, 40
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range identities {
						id := fmt.Sprintf("client-%d-%d", w, i)
						if _, err := p.Assign(id); err != nil {
							t.Errorf("Assign(%s): %v", id, err)
							return
						}
						p.Assign(fmt.Sprintf("client-%d-%d", w, i/2)) // a reconnect
					}
				})
			}
			wg.Go(func() {
				for i := range 20 {
					// reserved-i's lease goes to pinned-i, which then
					// moves on.
					a := addOffset(p.first, uint64(1000+i))
					if err := p.Reserve(fmt.Sprintf("reserved-%d", i), a); err != nil {
						t.Errorf("Reserve: %v", err)
					}
					if evicted, err := p.Pin(fmt.Sprintf("pinned-%d", i), a); err != nil || evicted != fmt.Sprintf("reserved-%d", i) {
						t.Errorf("Pin = %q, %v", evicted, err)
					}
					if _, err := p.Pin(fmt.Sprintf("pinned-%d", i), addOffset(p.first, uint64(900+i))); err != nil {
						t.Errorf("Pin: %v", err)
					}
				}
			})
			wg.Wait()
			if t.Failed() {
				return
			}
			p.writeMu.Lock()
			bound := p.journalLen < max(p.snapLen, p.compactMin)
			p.writeMu.Unlock()
			if !bound {
				t.Errorf("journal of %d bytes past its bound after the last write (snapshot %d bytes)", p.journalLen, p.snapLen)
			}
			if (compactions > 0) != tt.wantCompaction {
				t.Errorf("%d compactions, want some: %v", compactions, tt.wantCompaction)
			}
			if got, want := snapshotGen(t, path), uint64(compactions); got != want {
				t.Errorf("snapshot generation %d, want %d (one per compaction)", got, want)
			}
			if n := p.Len(); n != workers*identities+20 {
				t.Errorf("Len() = %d, want %d", n, workers*identities+20)
			}
			checkLeaseFiles(t, path)
			q := mustOpenPool(t, "fd00:64::/118", path)
			if got, want := leaseText(q), leaseText(p); got != want {
				t.Errorf("reopened leases:\n%s\nwant:\n%s", got, want)
			}
			if err := p.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, path+journalSuffix); len(got) != 0 {
				t.Errorf("journal after Flush = %q, want it empty", got)
			}
			if r := mustOpenPool(t, "fd00:64::/118", path); leaseText(r) != leaseText(p) {
				t.Errorf("leases after Flush:\n%s\nwant:\n%s", leaseText(r), leaseText(p))
			}
		})
	}
}

// TestJournalCompactionBound checks when compactions happen: not before
// the journal is as large as the snapshot (and compactMin), and then
// after the write that makes it so, with every lease and last-assigned
// time in the new snapshot.
func TestJournalCompactionBound(t *testing.T) {
	p, path := journalPool(t)
	p.compactMin = 2 << 10
	clock := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return clock }
	var compactedAt []int // iterations that compacted
	var i int
	p.onSnapshot = func() { compactedAt = append(compactedAt, i) }
	for i = 0; i < 100; i++ {
		p.writeMu.Lock()
		before, bound := p.journalLen, max(p.snapLen, p.compactMin)
		p.writeMu.Unlock()
		clock = clock.Add(time.Second)
		mustAssign(t, p, "alice", "100.64.0.2") // after the first: a reconnect, saved by the next compaction
		if i == 0 {
			continue
		}
		if _, err := p.Assign(fmt.Sprintf("client-%d", i)); err != nil {
			t.Fatal(err)
		}
		p.writeMu.Lock()
		after := p.journalLen
		p.writeMu.Unlock()
		compacted := len(compactedAt) > 0 && compactedAt[len(compactedAt)-1] == i
		if want := before+int64(len(p.jbuf)) >= bound; compacted != want {
			t.Fatalf("after identity %d: compacted %v, want %v (journal %d + %d bytes, bound %d)", i, compacted, want, before, len(p.jbuf), bound)
		}
		if compacted && after != 0 {
			t.Fatalf("journal of %d bytes after a compaction, want empty", after)
		}
	}
	if len(compactedAt) < 2 {
		t.Fatalf("compactions after identities %v, want at least 2", compactedAt)
	}
	q := mustOpenPool(t, "100.64.0.0/24", path)
	if got, want := leaseText(q), leaseText(p); got != want {
		t.Errorf("reopened leases:\n%s\nwant:\n%s", got, want)
	}
	// alice's last reconnect before the last compaction is on disk.
	f, err := parseLeases(readFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	last := compactedAt[len(compactedAt)-1]
	wantLast := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(last+1) * time.Second)
	for _, e := range f.Leases {
		if e.Identity == "alice" && !e.LastAssigned.Equal(wantLast) {
			t.Errorf("alice's last-assigned time in the snapshot = %v, want %v (compaction after identity %d)", e.LastAssigned, wantLast, last)
		}
	}
}

// TestJournalStartOver checks that removing the leases file starts over,
// even if its journal is left behind.
func TestJournalStartOver(t *testing.T) {
	_, path := journalPool(t, "alice", "bob")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	p := mustOpenPool(t, "100.64.0.0/24", path)
	if n := p.Len(); n != 0 {
		t.Errorf("Len() after starting over = %d, want 0:\n%s", n, leaseText(p))
	}
	mustAssign(t, p, "carol", "100.64.0.2")
	if q := mustOpenPool(t, "100.64.0.0/24", path); leaseText(q) != "100.64.0.2 carol" {
		t.Errorf("reopened leases:\n%s\nwant carol's alone", leaseText(q))
	}
}

// TestJournalSubnetChange replays a journal after a subnet change: leases
// outside the subnet are dropped, with a warning, and stay in the files
// until the next new lease compacts them away.
func TestJournalSubnetChange(t *testing.T) {
	p, path := journalPool(t, "alice")
	if _, err := p.Pin("bob", netip.MustParseAddr("100.64.0.200")); err != nil {
		t.Fatal(err)
	}
	snapshot, journal := readFile(t, path), readFile(t, path+journalSuffix)
	q, warnings, err := OpenPool(netip.MustParsePrefix("100.64.0.0/25"), path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warnings {
		got = append(got, w.Error())
	}
	want := []string{
		fmt.Sprintf("leases file %s: subnet changed from 100.64.0.0/24 to 100.64.0.0/25; keeping the leases inside 100.64.0.0/25", path),
		fmt.Sprintf("leases file %s: dropping pin of 100.64.0.200 to %q: not a client address of 100.64.0.0/25", path+journalSuffix, "bob"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if leaseText(q) != "100.64.0.2 alice" {
		t.Errorf("leases:\n%s\nwant alice's", leaseText(q))
	}
	if !bytes.Equal(readFile(t, path), snapshot) || !bytes.Equal(readFile(t, path+journalSuffix), journal) {
		t.Errorf("OpenPool with warnings changed the files")
	}
	mustAssign(t, q, "carol", "100.64.0.3")
	if r := mustOpenPool(t, "100.64.0.0/25", path); leaseText(r) != leaseText(q) {
		t.Errorf("leases after the next new lease:\n%s\nwant:\n%s", leaseText(r), leaseText(q))
	}
}

// TestAppendJournal checks that journal lines decode to what was encoded.
func TestAppendJournal(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		op       string
		identity string
		l        lease
		wantErr  bool
	}{
		{name: "add", op: opAdd, identity: "CN=alice,O=Example", l: lease{addr: netip.MustParseAddr("100.64.0.2"), first: t0}},
		{name: "pin, IPv6", op: opPin, identity: "bob", l: lease{addr: netip.MustParseAddr("fd00:64::2"), first: t0}},
		{name: "escaped identity", op: opAdd, identity: "quote \" backslash \\ <b>&</b> \x00\n\u2028 Jürgen \xff", l: lease{addr: netip.MustParseAddr("100.64.0.2"), first: t0}},
		{name: "other zone and nanoseconds", op: opAdd, identity: "dave", l: lease{addr: netip.MustParseAddr("100.64.0.2"), first: time.Date(2026, 1, 2, 3, 4, 5, 600700800, time.FixedZone("", 5*3600+1800))}},
		{name: "year out of range", op: opAdd, identity: "erin", l: lease{addr: netip.MustParseAddr("100.64.0.2"), first: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := appendJournalRecord([]byte("kept"), tt.op, tt.identity, tt.l)
			if (err != nil) != tt.wantErr {
				t.Fatalf("appendJournalRecord error %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			line, ok := bytes.CutPrefix(got, []byte("kept"))
			if !ok || bytes.Count(line, []byte("\n")) != 1 || !bytes.HasSuffix(line, []byte("\n")) {
				t.Fatalf("appendJournalRecord = %q, want one line after the bytes it appends to", got)
			}
			want, err := json.Marshal(struct {
				Op       string     `json:"op"`
				Identity string     `json:"identity"`
				Addr     netip.Addr `json:"addr"`
				At       time.Time  `json:"at"`
			}{tt.op, tt.identity, tt.l.addr, tt.l.first})
			if err != nil {
				t.Fatal(err)
			}
			if string(line) != string(want)+"\n" {
				t.Errorf("appendJournalRecord:\n%s\nwant (json.Marshal):\n%s", line, want)
			}
			line = appendJournalCommit(line, 1<<64-1, 1)
			batches, n, err := parseJournal(line)
			if err != nil || n != len(line) || len(batches) != 1 || batches[0].gen != 1<<64-1 || len(batches[0].records) != 1 {
				t.Fatalf("parseJournal(%q) = %+v, %d, %v", line, batches, n, err)
			}
			r := batches[0].records[0]
			if r.Op != tt.op || r.Identity != strings.ToValidUTF8(tt.identity, "\uFFFD") || r.Addr != tt.l.addr || !r.At.Equal(tt.l.first) {
				t.Errorf("parsed record %+v, want %s of %q to %v at %v", r, tt.op, tt.identity, tt.l.addr, tt.l.first)
			}
		})
	}
}
