package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// LeasesVersion is the format version of the leases file written by
// OpenPool's Pool. A file with a higher version is refused rather than
// half-understood.
const LeasesVersion = 1

// leaseFile is the JSON leases file, the snapshot, for example:
//
//	{
//	  "version": 1,
//	  "subnet": "100.64.0.0/24",
//	  "generation": 7,
//	  "leases": [
//	    {
//	      "identity": "alice",
//	      "addr": "100.64.0.2",
//	      "first_assigned": "2026-05-01T10:00:00Z",
//	      "last_assigned": "2026-05-03T08:12:30Z"
//	    }
//	  ]
//	}
//
// Leases are sorted by address. Subnet is the pool's subnet when the file
// was written; it only tells a changed subnet apart on load. Generation
// counts the snapshots written (0, and left out, for the first one, and in
// files written before the journal existed); each batch in the journal
// names the generation of the snapshot it extends (see journalRecord).
type leaseFile struct {
	Version    int          `json:"version"`
	Subnet     netip.Prefix `json:"subnet"`
	Generation uint64       `json:"generation,omitempty"`
	Leases     []leaseEntry `json:"leases"`
}

type leaseEntry struct {
	Identity      string     `json:"identity"`
	Addr          netip.Addr `json:"addr"`
	FirstAssigned time.Time  `json:"first_assigned"`
	LastAssigned  time.Time  `json:"last_assigned"`
}

// journalSuffix names the journal of the leases file at path:
// path+journalSuffix.
const journalSuffix = ".journal"

// Operations of journal records.
const (
	// opAdd is a new lease (Assign, Reserve): the identity held none,
	// and the address was free.
	opAdd = "add"
	// opPin is a lease made by Pin: the identity's previous lease, if
	// any, is released, and the address's holder, if any, loses it.
	opPin = "pin"
	// opCommit ends a batch: the records since the previous commit.
	opCommit = "commit"
)

// journalRecord is one line of the journal, which holds the changes made
// since the snapshot was written, in batches: the records of a batch's
// new leases, then a commit record, each a JSON object on a line of its
// own, for example:
//
//	{"op":"add","identity":"bob","addr":"100.64.0.3","at":"2026-05-03T08:12:31Z"}
//	{"op":"add","identity":"carol","addr":"100.64.0.4","at":"2026-05-03T08:12:31Z"}
//	{"op":"commit","gen":7,"entries":2}
//	{"op":"pin","identity":"dave","addr":"100.64.0.3","at":"2026-05-03T08:13:00Z"}
//	{"op":"commit","gen":7,"entries":1}
//
// A lease's first- and last-assigned times are both At. A commit names
// the generation of the snapshot that its batch extends (see OpenPool for
// how that makes replay safe) and counts the batch's other records, so
// that a batch that a crash cut short is told apart from a whole one. A
// batch is only ever appended, with one write, and only its last line
// ends the write.
type journalRecord struct {
	Op       string     `json:"op"`
	Identity string     `json:"identity"` // add, pin
	Addr     netip.Addr `json:"addr"`     // add, pin
	At       time.Time  `json:"at"`       // add, pin
	Gen      *uint64    `json:"gen"`      // commit
	Entries  *int       `json:"entries"`  // commit
}

// journalBatch is a whole batch of the journal.
type journalBatch struct {
	gen     uint64 // generation of the snapshot it extends
	records []journalRecord
}

// CorruptLeasesError reports a leases file that cannot be read as leases,
// for example one truncated or mangled by hand. OpenPool refuses it rather
// than start with no leases, which would give clients new addresses.
type CorruptLeasesError struct {
	Path string
	Err  error // what is wrong
}

func (e *CorruptLeasesError) Error() string {
	return fmt.Sprintf("leases file %s is corrupt: %v; fix it, or remove it to start over (clients will then get new addresses)", e.Path, e.Err)
}

func (e *CorruptLeasesError) Unwrap() error { return e.Err }

// OpenPool returns a Pool for subnet (as NewPool) whose leases persist in
// two files, so that clients keep their addresses across restarts of the
// server: the snapshot at path, a JSON file with every lease as of its
// writing (see leaseFile), and the journal at path+".journal" (for
// example leases.json.journal), with the changes made since, one JSON
// object per line (see journalRecord).
//
// OpenPool loads the snapshot (removing temporary files that a crash
// during a write may have left next to it) and replays the journal onto
// it, or, if there is no snapshot, creates an empty one and an empty
// journal (and their directory, mode 0700); a journal without its snapshot
// is removed, since its leases were removed to start over.
//
// Afterwards the Pool writes before it hands out: each batch of new leases
// (see Pool), and each Pin, is appended to the journal with one write and
// one fsync, whatever the number of leases. Once the journal has grown
// past the size of the snapshot (and at least compactMin), and at Flush,
// the Pool compacts: it writes a new snapshot of every lease, with the
// next generation, replacing the file atomically (temporary file in the
// same directory, fsync, rename, fsync of the directory), and then drops
// the journal's batches that the snapshot holds. Usually it does so in the
// background: the snapshot is written while appends go on, and the journal
// is then replaced, the same atomic way, by a file with just the batches
// appended meanwhile (see compactInBackground). Flush, and the compaction
// after a failed append or a load that dropped leases, run under the
// write lock and empty the journal (truncate, fsync). The cost of a
// compaction grows with the number of leases, but so does the number of
// appends between two of them, so a new lease costs about the same
// whatever the pool holds.
//
// A crash at any moment, even kill -9 or a power loss, loses no lease that
// was handed out, and leaves files that OpenPool reads:
//
//   - During an append, the batch being appended may be left incomplete:
//     cut off, or (on some file systems) with a run of zero bytes, or
//     without its commit line. None of its leases was handed out yet, so
//     OpenPool ignores the journal's last batch if it is incomplete or
//     damaged, and cuts it off. Only the last batch can be: an append that
//     fails is cut off at once, and if that fails too, nothing more is
//     appended until a compaction has emptied the journal. So a damaged
//     batch followed by more is corruption.
//   - During a compaction, until the rename, the old snapshot and the
//     journal are intact. Between the rename and the truncation or
//     replacement of the journal, the journal's batches from before the
//     compaction are all in the new snapshot too; they name an older
//     generation than the snapshot's, and OpenPool replays only batches of
//     the snapshot's generation or later (those appended during a
//     background compaction), so none is applied twice (which could undo a
//     later Pin, say).
//   - A snapshot whose write failed may still have been renamed into
//     place. Batches appended after it name its generation, so they are
//     replayed on top of it as well as on top of the older snapshot with
//     the batches before them.
//
// Loaded leases that cannot be honoured are dropped, and each is reported
// in warnings: addresses that are not client addresses of subnet (because
// the subnet changed, or the entry is the server, network or broadcast
// address), and second leases of one address or one identity. Dropped
// leases stay in the files until the next new lease (or Pin) compacts
// them away, so undoing an accidental subnet change before then loses
// nothing.
//
// A snapshot or journal that cannot be parsed is an error
// (*CorruptLeasesError), as is a snapshot of a newer LeasesVersion:
// OpenPool never silently drops leases.
//
// Only one Pool, in one process, may use path at a time. A program that
// predates the journal reads the snapshot alone: stop the server cleanly
// (tunneld Flushes, which empties the journal) before going back to one.
func OpenPool(subnet netip.Prefix, path string) (p *Pool, warnings []error, err error) {
	if path == "" {
		return nil, nil, errors.New("open address pool: empty leases file path")
	}
	p, err = NewPool(subnet)
	if err != nil {
		return nil, nil, err
	}
	p.path = path
	p.jpath = path + journalSuffix
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, nil, fmt.Errorf("create leases file directory: %w", err)
		}
		// Remove the journal first: a crash before the snapshot below
		// is written then leaves neither file, never the journal on
		// an empty snapshot. The snapshot's directory fsync makes the
		// removal durable.
		if err := os.Remove(p.jpath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("remove leases journal without its leases file: %w", err)
		}
		// Write the empty file now, so that an unwritable location stops
		// the server at start rather than at its first client.
		if err := p.save(p.snapshotLocked(), 0); err != nil {
			return nil, nil, err
		}
		p.snapLen = int64(len(p.buf))
		if err := p.openJournal(false, 0, 0); err != nil {
			return nil, nil, err
		}
		return p, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read leases file: %w", err)
	}
	removeStaleTemps(path)
	removeStaleTemps(p.jpath) // a journal a compaction was replacing
	f, err := parseLeases(data)
	if err != nil {
		return nil, nil, &CorruptLeasesError{Path: path, Err: err}
	}
	if f.Version > LeasesVersion {
		return nil, nil, fmt.Errorf("leases file %s has format version %d, newer than this program's %d: upgrade, or remove the file to start over (clients will then get new addresses)", path, f.Version, LeasesVersion)
	}
	jdata, err := os.ReadFile(p.jpath)
	jexists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("read leases journal: %w", err)
	}
	batches, good, err := parseJournal(jdata)
	if err != nil {
		return nil, nil, &CorruptLeasesError{Path: p.jpath, Err: err}
	}
	warnings = p.load(f)
	warnings = append(warnings, p.replay(batches, f.Generation)...)
	p.snapLen = int64(len(data))
	// Batches appended from now on must not name a generation older
	// than those already in the journal (see parseJournal); a failed
	// compaction may have left some newer than the snapshot's.
	p.gen = f.Generation
	for _, b := range batches {
		p.gen = max(p.gen, b.gen)
	}
	p.rewrite = len(warnings) > 0
	if err := p.openJournal(jexists, int64(len(jdata)), int64(good)); err != nil {
		return nil, nil, err
	}
	return p, warnings, nil
}

// parseLeases decodes and checks the syntax of a leases file. It leaves
// the semantic checks (subnet, duplicates) to Pool.load.
func parseLeases(data []byte) (*leaseFile, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("file is empty")
	}
	var f leaseFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.Version < 1 {
		return nil, fmt.Errorf("missing or invalid format version %d", f.Version)
	}
	if f.Version > LeasesVersion {
		return &f, nil // the caller reports a newer version
	}
	for i, e := range f.Leases {
		switch {
		case e.Identity == "":
			return nil, fmt.Errorf("lease %d (%v): empty identity", i, e.Addr)
		case !e.Addr.IsValid():
			return nil, fmt.Errorf("lease %d (%q): missing address", i, e.Identity)
		}
	}
	return &f, nil
}

// parseJournal returns the whole batches of a journal, and the length of
// data that they span. What follows them is a last batch that a crash cut
// short (or damaged), to be ignored. A damaged batch followed by more is an
// error, as is a batch of an older generation than the one before it:
// neither is left by a crash (see OpenPool). It leaves the semantic checks
// to Pool.replay.
func parseJournal(data []byte) (batches []journalBatch, n int, err error) {
	var (
		records []journalRecord // of the batch being read
		damaged error           // what is wrong with it, if anything
	)
	for off, line := 0, 1; off < len(data); line++ {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			break // an incomplete last line: the tail is ignored
		}
		text := data[off : off+i]
		off += i + 1
		r, err := parseJournalRecord(text)
		switch {
		case err != nil:
			if damaged == nil {
				damaged = fmt.Errorf("line %d: %w", line, err)
			}
			continue
		case r.Op != opCommit:
			records = append(records, r)
			continue
		case damaged == nil && *r.Entries != len(records):
			damaged = fmt.Errorf("line %d: commit of %d records after %d", line, *r.Entries, len(records))
		case damaged == nil && len(batches) > 0 && *r.Gen < batches[len(batches)-1].gen:
			return nil, 0, fmt.Errorf("line %d: batch of generation %d after one of %d", line, *r.Gen, batches[len(batches)-1].gen)
		}
		if damaged != nil {
			if off < len(data) {
				return nil, 0, fmt.Errorf("%w, followed by more", damaged)
			}
			break // the last batch: ignored
		}
		batches = append(batches, journalBatch{gen: *r.Gen, records: records})
		records = nil
		n = off
	}
	return batches, n, nil
}

// parseJournalRecord decodes and checks the syntax of one journal line.
func parseJournalRecord(line []byte) (journalRecord, error) {
	var r journalRecord
	if err := json.Unmarshal(line, &r); err != nil {
		return journalRecord{}, err
	}
	switch r.Op {
	case opAdd, opPin:
		switch {
		case r.Identity == "":
			return journalRecord{}, fmt.Errorf("%s of %v: empty identity", r.Op, r.Addr)
		case !r.Addr.IsValid():
			return journalRecord{}, fmt.Errorf("%s of %q: missing address", r.Op, r.Identity)
		}
	case opCommit:
		if r.Gen == nil || r.Entries == nil || *r.Entries < 1 {
			return journalRecord{}, errors.New("commit without generation or entries")
		}
	default:
		return journalRecord{}, fmt.Errorf("unknown operation %q", r.Op)
	}
	return r, nil
}

// load adds the leases of f to the empty pool p, dropping and reporting
// those it cannot honour. It runs before p is shared.
func (p *Pool) load(f *leaseFile) (warnings []error) {
	if f.Subnet != p.subnet {
		warnings = append(warnings, fmt.Errorf("leases file %s: subnet changed from %v to %v; keeping the leases inside %v", p.path, f.Subnet, p.subnet, p.subnet))
	}
	for _, e := range f.Leases {
		if err := p.loadLease(p.path, e.Identity, lease{addr: e.Addr, first: e.FirstAssigned, last: e.LastAssigned}); err != nil {
			warnings = append(warnings, err)
		}
	}
	return warnings
}

// replay applies to p, as loaded from the snapshot of generation gen, the
// batches of the journal that extend it, dropping and reporting the leases
// it cannot honour (as load). Batches of an older generation are in the
// snapshot already. It runs before p is shared.
func (p *Pool) replay(batches []journalBatch, gen uint64) (warnings []error) {
	for _, b := range batches {
		if b.gen < gen {
			continue
		}
		for _, r := range b.records {
			l := lease{addr: r.Addr, first: r.At, last: r.At}
			if r.Op == opAdd {
				if err := p.loadLease(p.jpath, r.Identity, l); err != nil {
					warnings = append(warnings, err)
				}
				continue
			}
			// opPin
			if !p.IsClientAddr(l.addr) {
				warnings = append(warnings, fmt.Errorf("leases file %s: dropping pin of %v to %q: not a client address of %v", p.jpath, l.addr, r.Identity, p.subnet))
				continue
			}
			if old, ok := p.byID[r.Identity]; ok {
				delete(p.byAddr, old.addr)
			}
			if owner, ok := p.byAddr[l.addr]; ok {
				delete(p.byID, owner)
			}
			p.byID[r.Identity] = l
			p.byAddr[l.addr] = r.Identity
		}
	}
	return warnings
}

// loadLease adds the lease l of identity, read from file, to p, or returns
// why it drops it. It runs before p is shared.
func (p *Pool) loadLease(file, identity string, l lease) error {
	var why string
	if !p.IsClientAddr(l.addr) {
		why = fmt.Sprintf("not a client address of %v", p.subnet)
	} else if owner, ok := p.byAddr[l.addr]; ok {
		why = fmt.Sprintf("address already leased to %q", owner)
	} else if old, ok := p.byID[identity]; ok {
		why = fmt.Sprintf("identity already holds %v", old.addr)
	} else {
		p.byID[identity] = l
		p.byAddr[l.addr] = identity
		return nil
	}
	return fmt.Errorf("leases file %s: dropping lease of %v to %q: %s", file, l.addr, identity, why)
}

// snapshotLocked returns the pool's committed leases, unsorted, for save.
// It fills p.snap, which the next snapshot reuses. The caller holds writeMu
// and mu (or is the only user of p). Only the copy is done under mu:
// sorting and encoding are left to save, so that reconnecting clients wait
// for mu as briefly as possible.
func (p *Pool) snapshotLocked() []leaseEntry {
	entries := p.snap[:0]
	for id, l := range p.byID {
		entries = append(entries, leaseEntry{Identity: id, Addr: l.addr, FirstAssigned: l.first, LastAssigned: l.last})
	}
	p.snap = entries
	return entries
}

// save sorts entries by address and writes them as the snapshot of
// generation gen. The caller holds writeMu (or is the only user of p),
// which guards the buffers it reuses.
func (p *Pool) save(entries []leaseEntry, gen uint64) error {
	entries = p.sortEntries(entries)
	data, err := appendLeaseFile(p.buf[:0], p.subnet, gen, entries)
	if err != nil {
		return fmt.Errorf("encode leases file %s: %w", p.path, err)
	}
	p.buf = data
	return writeLeases(p.path, data, p.syncFile)
}

// compactDue reports whether the journal is to be folded into a new
// snapshot: once it is at least as large as the snapshot (and
// compactMin), so that the cost of a compaction, which grows with the
// number of leases, is spread over about as many new leases (a journal
// record is shorter than a snapshot's entry), and OpenPool reads at most
// about twice the snapshot; or when the snapshot still holds leases that
// OpenPool dropped; or when the journal cannot be appended to. The caller
// holds writeMu.
func (p *Pool) compactDue() bool {
	return p.rewrite || p.journalBad || p.journalLen >= max(p.snapLen, p.compactMin)
}

// maybeCompactLocked compacts if the journal is due (see compactDue) and
// no compaction is running: in the background (compactInBackground), or
// at once for leases OpenPool dropped or a journal that cannot be appended
// to. The caller holds writeMu and not mu.
func (p *Pool) maybeCompactLocked() {
	if p.compacting != nil || !p.compactDue() {
		return
	}
	if p.rewrite || p.journalBad || p.syncCompaction {
		p.compactLocked() // on failure the journal keeps every lease, and the next write tries again
		return
	}
	p.mu.Lock()
	entries := slices.Clone(p.snapshotLocked())
	p.dirty = false // the snapshot will have every last-assigned time so far
	p.mu.Unlock()
	// As in compactLocked: batches appended from now on name the new
	// generation, every batch before them an older one.
	p.gen++
	done := make(chan struct{})
	p.compacting = done
	go p.compactInBackground(entries, p.gen, p.journalLen, done)
}

// compactInBackground writes the snapshot of entries (the committed leases
// as of journal offset from) as generation gen without writeMu; then,
// under writeMu, it replaces the journal by its batches after from (those
// appended meanwhile, all of gen), written to a new file that is renamed
// over the old one. At every moment the files are ones OpenPool reads
// right: until the snapshot's rename, the old snapshot and the whole
// journal; then the new snapshot, onto which only the journal's batches of
// gen are replayed (those before from name an older generation); then the
// new snapshot and the shorter journal. If the snapshot cannot be written,
// the journal stays whole and a later write tries again; if only the
// journal cannot be replaced, it stays whole, which is right too.
func (p *Pool) compactInBackground(entries []leaseEntry, gen uint64, from int64, done chan struct{}) {
	// save's scratch buffers belong to the one compaction that runs (see
	// lockNoCompaction).
	serr := p.save(entries, gen)
	if serr == nil && p.onSnapshot != nil {
		p.onSnapshot()
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	defer func() {
		p.compacting = nil
		close(done)
	}()
	if serr != nil {
		p.mu.Lock()
		p.dirty = true
		p.mu.Unlock()
		return
	}
	p.snapLen = int64(len(p.buf))
	tail := make([]byte, p.journalLen-from)
	if _, err := p.journal.ReadAt(tail, from); err != nil {
		return
	}
	if err := writeLeases(p.jpath, tail, p.syncFile); err != nil {
		return
	}
	f, err := os.OpenFile(p.jpath, os.O_RDWR, 0o600)
	if err != nil {
		// The new journal is in place but cannot be opened: the old
		// file is no longer the journal. Compact before the next
		// append (see commitLocked).
		p.journalBad = true
		return
	}
	p.journal.Close()
	p.journal = f
	p.journalLen = int64(len(tail))
	p.journalBad = false
}

// lockNoCompaction takes writeMu once no compaction runs in the
// background, for a caller that compacts at once (Flush): a compaction owns
// the scratch buffers and the files until it is over.
func (p *Pool) lockNoCompaction() {
	for {
		p.writeMu.Lock()
		c := p.compacting
		if c == nil {
			return
		}
		p.writeMu.Unlock()
		<-c
	}
}

// compactLocked writes a snapshot of the committed leases, with the next
// generation, and then empties the journal. Its batches are in the new
// snapshot, and name an older generation, so that a crash between the two
// steps replays none of them (see OpenPool). The caller holds writeMu and
// not mu: mu is held only to copy the leases.
func (p *Pool) compactLocked() error {
	p.mu.Lock()
	entries := p.snapshotLocked()
	p.dirty = false // the snapshot has every last-assigned time so far
	p.mu.Unlock()
	// Batches appended from now on name the new generation, even if the
	// write fails: it may fail after its rename, and then a restart
	// reads the new snapshot, onto which they must be replayed (and the
	// batches before them must not). If the old snapshot is read
	// instead, they are replayed onto it after the batches before them,
	// which name no older generation than it.
	p.gen++
	if err := p.save(entries, p.gen); err != nil {
		p.mu.Lock()
		p.dirty = true
		p.mu.Unlock()
		return err
	}
	p.snapLen = int64(len(p.buf))
	p.rewrite = false
	if p.onSnapshot != nil {
		p.onSnapshot()
	}
	// The truncation must be durable before the next append: otherwise a
	// crash could leave that append over the old contents, whose remains
	// would follow it as a damaged batch.
	if err := p.truncFile(p.journal, 0); err != nil {
		p.journalBad = true
		return fmt.Errorf("empty leases journal %s: %w", p.jpath, err)
	}
	if err := p.syncFile(p.journal); err != nil {
		p.journalBad = true
		return fmt.Errorf("empty leases journal %s: sync: %w", p.jpath, err)
	}
	p.journalLen = 0
	p.journalBad = false
	return nil
}

// commitLocked makes the leases adds durable, as records op of one batch
// appended to the journal. If the journal cannot be appended to (see
// appendLocked), it compacts first. The caller holds writeMu and not mu,
// and adds does not change meanwhile.
func (p *Pool) commitLocked(op string, adds map[string]lease) error {
	if p.journalBad {
		if p.compacting != nil {
			// The compaction that runs owns the files; it replaces the
			// journal, which clears journalBad.
			return fmt.Errorf("append to leases journal %s: the journal failed while a compaction runs; try again", p.jpath)
		}
		if err := p.compactLocked(); err != nil {
			return err
		}
	}
	return p.appendLocked(op, adds)
}

// appendLocked appends a batch of the records op of the leases adds to
// the journal, with one write (at journalLen) and one fsync. If either fails, it cuts the
// journal back to its whole batches, so that no later append follows the
// remains of this one (which would make the journal corrupt, see
// parseJournal); if that fails too, it marks the journal bad, and nothing
// more is appended until a compaction has emptied it. The caller holds
// writeMu.
func (p *Pool) appendLocked(op string, adds map[string]lease) error {
	b := p.jbuf[:0]
	var err error
	for id, l := range adds {
		if b, err = appendJournalRecord(b, op, id, l); err != nil {
			return fmt.Errorf("encode leases journal %s: %w", p.jpath, err)
		}
	}
	b = appendJournalCommit(b, p.gen, len(adds))
	p.jbuf = b
	start := time.Now()
	if _, err = p.writeFile(p.journal, b, p.journalLen); err == nil {
		if err = p.syncFile(p.journal); err != nil {
			err = fmt.Errorf("sync: %w", err)
		}
	}
	if err != nil {
		if terr := p.truncFile(p.journal, p.journalLen); terr != nil {
			p.journalBad = true
		}
		return fmt.Errorf("append to leases journal %s: %w", p.jpath, err)
	}
	p.journalLen += int64(len(b))
	if fn := p.observer.Load(); fn != nil {
		(*fn)(time.Since(start), len(adds))
	}
	if p.onAppend != nil {
		p.onAppend()
	}
	return nil
}

// openJournal opens the journal for appends. If it exists, its whole
// batches span its first good of size bytes, and the rest, a batch cut
// short by a crash, is cut off; if not, it is created, and its directory
// synced so that it stays. It runs before p is shared.
func (p *Pool) openJournal(exists bool, size, good int64) error {
	// Not O_APPEND: appendLocked writes where the whole batches end
	// (journalLen), and on Windows a file opened for appends cannot be
	// truncated.
	f, err := os.OpenFile(p.jpath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open leases journal: %w", err)
	}
	if good < size {
		if err := p.truncFile(f, good); err != nil {
			f.Close()
			return fmt.Errorf("cut incomplete batch off leases journal %s: %w", p.jpath, err)
		}
		if err := p.syncFile(f); err != nil {
			f.Close()
			return fmt.Errorf("cut incomplete batch off leases journal %s: sync: %w", p.jpath, err)
		}
	}
	if !exists {
		if err := syncDir(filepath.Dir(p.jpath), p.syncFile); err != nil {
			f.Close()
			return fmt.Errorf("create leases journal %s: %w", p.jpath, err)
		}
	}
	p.journal = f
	p.journalLen = good
	return nil
}

// sortEntries returns entries sorted by address. Every lease is a client
// address of the pool, and no two share one, so it places each entry by
// its offset from p.first, in time linear in the pool's size: a comparison
// sort of 10,000 leases took 2.4 ms, more than encoding them. Should an
// entry break those rules, it falls back to a comparison sort, so that no
// lease is ever lost. The caller holds writeMu (or is the only user of p),
// which guards p.slots and p.sorted.
func (p *Pool) sortEntries(entries []leaseEntry) []leaseEntry {
	if len(p.slots) != p.size {
		p.slots = make([]int32, p.size)
	}
	for i := range p.slots {
		p.slots[i] = -1
	}
	for i, e := range entries {
		off, ok := p.offset(e.Addr)
		if !ok || p.slots[off] >= 0 {
			slices.SortStableFunc(entries, func(a, b leaseEntry) int { return a.Addr.Compare(b.Addr) })
			return entries
		}
		p.slots[off] = int32(i)
	}
	sorted := p.sorted[:0]
	for _, i := range p.slots {
		if i >= 0 {
			sorted = append(sorted, entries[i])
		}
	}
	p.sorted = sorted
	return sorted
}

// appendLeaseFile appends the leases file of subnet, generation gen and
// entries to b, byte for byte as json.MarshalIndent(leaseFile, "", "  ")
// plus a newline would, without its reflection: for 10,000 leases
// MarshalIndent took about 18 ms and this about 1 ms
// (BenchmarkLeasesEncode), and it was what capped new identities at about
// 40 a second before the journal. TestAppendLeaseFile holds the two equal.
func appendLeaseFile(b []byte, subnet netip.Prefix, gen uint64, entries []leaseEntry) ([]byte, error) {
	b = append(b, "{\n  \"version\": "...)
	b = strconv.AppendInt(b, LeasesVersion, 10)
	b = append(b, ",\n  \"subnet\": \""...)
	b = subnet.AppendTo(b) // as MarshalText; never needs escaping
	b = append(b, '"')
	if gen != 0 {
		b = append(b, ",\n  \"generation\": "...)
		b = strconv.AppendUint(b, gen, 10)
	}
	b = append(b, ",\n  \"leases\": ["...)
	var err error
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n    {\n      \"identity\": "...)
		b = appendJSONString(b, e.Identity)
		b = append(b, ",\n      \"addr\": \""...)
		b = e.Addr.AppendTo(b)
		b = append(b, "\",\n      \"first_assigned\": \""...)
		if b, err = e.FirstAssigned.AppendText(b); err != nil {
			return nil, err
		}
		b = append(b, "\",\n      \"last_assigned\": \""...)
		if b, err = e.LastAssigned.AppendText(b); err != nil {
			return nil, err
		}
		b = append(b, "\"\n    }"...)
	}
	if len(entries) > 0 {
		b = append(b, "\n  "...)
	}
	b = append(b, "]\n}\n"...)
	return b, nil
}

// appendJournalRecord appends the journal line of a record op (opAdd or
// opPin) of identity's new lease l to b, as json.Marshal(journalRecord)
// would write its fields (TestAppendJournal holds them equal).
func appendJournalRecord(b []byte, op, identity string, l lease) ([]byte, error) {
	b = append(b, `{"op":"`...)
	b = append(b, op...)
	b = append(b, `","identity":`...)
	b = appendJSONString(b, identity)
	b = append(b, `,"addr":"`...)
	b = l.addr.AppendTo(b)
	b = append(b, `","at":"`...)
	b, err := l.first.AppendText(b)
	if err != nil {
		return nil, err
	}
	return append(b, "\"}\n"...), nil
}

// appendJournalCommit appends the journal line that ends a batch of
// entries records extending the snapshot of generation gen to b.
func appendJournalCommit(b []byte, gen uint64, entries int) []byte {
	b = append(b, `{"op":"commit","gen":`...)
	b = strconv.AppendUint(b, gen, 10)
	b = append(b, `,"entries":`...)
	b = strconv.AppendInt(b, int64(entries), 10)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it (including its HTML escapes), so that the file stays the same
// as MarshalIndent's. Identities are usually plain ASCII, which is copied
// as is; anything else is left to encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// tempPrefix is the name prefix of writeLeases's temporary files for path.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// removeStaleTemps removes temporary files that a writeLeases interrupted
// by a crash left next to path. It is best effort: a leftover file is
// harmless, since it is never read.
func removeStaleTemps(path string) {
	dir := filepath.Dir(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), tempPrefix(path)) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// writeLeases replaces the file at path with data atomically: it writes a
// temporary file in the same directory, syncs it, renames it over path and
// syncs the directory, so that after a crash path holds either the old or
// the new contents, and after a successful return the new contents are
// durable. syncFile is (*os.File).Sync except in tests.
func writeLeases(path string, data []byte, syncFile func(*os.File) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPrefix(path)+"*") // mode 0600
	if err != nil {
		return fmt.Errorf("write leases file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write leases file %s: %w", path, err)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename is durable only once the directory entry is.
	return syncDir(dir, syncFile)
}

// syncDir syncs the directory dir, so that the entries made, renamed or
// removed in it are durable. syncFile is (*os.File).Sync except in tests.
func syncDir(dir string, syncFile func(*os.File) error) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := syncFile(d); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
