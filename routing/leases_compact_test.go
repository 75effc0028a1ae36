package routing

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestBackgroundCompaction: new identities keep getting durable leases
// while a compaction writes its snapshot, and the files left at each step
// of the compaction (before the snapshot's rename, between the rename and
// the journal's replacement, after it) reopen to every lease handed out
// by then. With the compaction under the write lock, as before, the
// Assigns during the snapshot's write would wait for it: the test would
// hang.
func TestBackgroundCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	p, _, err := OpenPool(netip.MustParsePrefix("100.64.0.0/20"), path)
	if err != nil {
		t.Fatal(err)
	}
	p.compactMin = 1 << 10

	// Hold the first compaction inside its snapshot write (the fsync of
	// the temporary file) until the test lets it go.
	inSave := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	sync0 := p.syncFile
	p.syncFile = func(f *os.File) error {
		if strings.HasPrefix(filepath.Base(f.Name()), tempPrefix(path)) {
			once.Do(func() {
				close(inSave)
				<-release
			})
		}
		return sync0(f)
	}
	// The files at onSnapshot, read on the compaction's goroutine and
	// reopened later on the test's.
	var snapAt, journalAt []byte
	p.onSnapshot = func() {
		snapAt, _ = os.ReadFile(path)
		journalAt, _ = os.ReadFile(path + journalSuffix)
	}

	n := 0
	assign := func() {
		t.Helper()
		id := fmt.Sprintf("client-%03d", n)
		n++
		if _, err := p.Assign(id); err != nil {
			t.Fatalf("Assign(%s): %v", id, err)
		}
	}
	// New identities until the journal passes compactMin: the write that
	// does so starts the compaction and returns.
	for {
		assign()
		p.writeMu.Lock()
		started := p.compacting != nil
		p.writeMu.Unlock()
		if started {
			break
		}
		if n > 200 {
			t.Fatal("no compaction started after 200 new leases")
		}
	}
	<-inSave
	// The compaction is in the middle of its snapshot: new leases are
	// still written and handed out, and the files hold them.
	before := n
	for range 20 {
		assign()
	}
	if got := reopenCopy(t, path); got != leaseText(p) {
		t.Errorf("files during the snapshot's write reopen to:\n%s\nwant:\n%s", got, leaseText(p))
	}
	close(release)
	p.lockNoCompaction()
	journalLen, gen := p.journalLen, p.gen
	p.writeMu.Unlock()

	if got := reopenFiles(t, snapAt, journalAt); got != leaseText(p) {
		t.Errorf("files between the snapshot's rename and the journal's replacement reopen to:\n%s\nwant:\n%s", got, leaseText(p))
	}
	// The journal now holds the batches written during the compaction,
	// all of its generation, and nothing before them.
	data := readFile(t, path+journalSuffix)
	if int64(len(data)) != journalLen || journalLen == 0 {
		t.Errorf("journal after the compaction: %d bytes on disk, %d in the pool; want the %d leases written meanwhile", len(data), journalLen, n-before)
	}
	batches, _, err := parseJournal(data)
	if err != nil {
		t.Fatal(err)
	}
	leases := 0
	for _, b := range batches {
		if b.gen != gen {
			t.Errorf("journal batch of generation %d after the compaction to %d", b.gen, gen)
		}
		leases += len(b.records)
	}
	if leases != n-before {
		t.Errorf("journal after the compaction holds %d leases, want the %d written meanwhile", leases, n-before)
	}
	if got := reopenCopy(t, path); got != leaseText(p) {
		t.Errorf("files after the compaction reopen to:\n%s\nwant:\n%s", got, leaseText(p))
	}
	// Appends go on in the new journal; Flush leaves one snapshot.
	for range 5 {
		assign()
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path+journalSuffix); len(got) != 0 {
		t.Errorf("journal after Flush: %d bytes, want none", len(got))
	}
	if got := reopenCopy(t, path); got != leaseText(p) {
		t.Errorf("files after Flush reopen to:\n%s\nwant:\n%s", got, leaseText(p))
	}
}

// reopenCopy returns the leases a Pool opened on a copy of the snapshot
// and journal at path holds: what a crash at this moment would leave.
func reopenCopy(t *testing.T, path string) string {
	t.Helper()
	return reopenFiles(t, readFile(t, path), readFile(t, path+journalSuffix))
}

// reopenFiles writes a snapshot and a journal to a new directory and
// returns the leases a Pool opened on them holds.
func reopenFiles(t *testing.T, snapshot, journal []byte) string {
	t.Helper()
	if len(snapshot) == 0 {
		t.Fatal("no snapshot to reopen")
	}
	dst := filepath.Join(t.TempDir(), "leases.json")
	if err := os.WriteFile(dst, snapshot, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+journalSuffix, journal, 0o600); err != nil {
		t.Fatal(err)
	}
	q, warnings, err := OpenPool(netip.MustParsePrefix("100.64.0.0/20"), dst)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("reopen: %v %v", err, warnings)
	}
	defer q.journal.Close()
	return leaseText(q)
}
