package routing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// defaultCompactMin is the size of journal below which a Pool does not
// compact, however small its snapshot: a few hundred new leases.
const defaultCompactMin = 64 << 10

// MaxLeases caps the number of client addresses a Pool hands out, so that
// a large IPv6 prefix (a /64 has 2^64 addresses) does not promise more
// leases than a server can track.
const MaxLeases = 1 << 16

var (
	// ErrPoolExhausted is returned by Pool.Assign when every client
	// address of the pool is leased.
	ErrPoolExhausted = errors.New("routing: address pool exhausted")
	// ErrAddrInUse is returned by Pool.Reserve when the address is
	// leased to another identity.
	ErrAddrInUse = errors.New("routing: address in use")
)

// Pool leases tunnel addresses from one subnet to client identities (for
// example the certificate subject). A lease is permanent for the life of
// the Pool, so an identity gets the same address on every reconnect. A Pool
// made by OpenPool also keeps its leases in files, so they survive a
// restart of the server.
//
// The first host address of the subnet belongs to the server
// (ServerAddr). Clients get the following addresses in ascending order,
// up to MaxLeases of them. For IPv4 the network and broadcast addresses
// are never used; for IPv6 the subnet-router anycast address (the
// all-zeros host, RFC 4291 section 2.6.1) is never used.
//
// A Pool made by OpenPool keeps two files: the snapshot (the path given to
// OpenPool, say leases.json), with every lease as of its writing, and the
// journal (leases.json.journal), to which every new lease is appended
// before it is handed out. A new lease costs one append of a line to the
// journal, and an fsync, however many leases the pool holds. Now and then
// (once the journal is as large as the snapshot, and at Flush) the pool
// compacts: it replaces the snapshot atomically with one of every lease,
// and empties the journal. A crash at any moment loses no lease that was
// handed out: a batch in the journal counts only once its last line, a
// commit that counts its records, is complete, and only a whole batch is
// handed out; each snapshot has a generation number, and each batch names
// the generation it extends, so that after a crash between a compaction's
// rename and its emptying of the journal no batch is replayed twice. See
// OpenPool for the details and the formats.
//
// A Pool is safe for concurrent use. Identities that already hold a lease
// are answered under mu alone, which is never held across file I/O, so
// neither a slow fsync nor a compaction delays a reconnecting client. New
// leases are committed in groups: an append costs about the same whatever
// it adds, so while one write is in flight (under writeMu) the new leases
// that arrive are gathered in the open batch, and the first of them, the
// batch's leader, appends them all once writeMu is free, while the others
// wait for the outcome of that append. A burst of N new identities thus
// costs about two appends rather than N, and each Assign still returns
// only once its lease is durable. When the journal is due for compaction
// (see compactDue), the leader that appended last starts a compaction,
// after it has told its batch the outcome, and new identities that arrive
// meanwhile are not held up by it: the compaction copies the leases and
// starts a new generation under writeMu, writes the snapshot (the part
// that grows with the number of leases) in a goroutine of its own without
// writeMu while appends go on, and takes writeMu again only to drop the
// journal's batches that the snapshot holds (see compactInBackground).
// Pin appends its lease as a batch of its own (see Pin). Last-assigned times of existing leases are saved by
// the next compaction.
type Pool struct {
	// Immutable after NewPool/OpenPool.
	subnet netip.Prefix
	server netip.Addr
	first  netip.Addr // first client address
	size   int        // number of client addresses, >= 1
	path   string     // leases file (snapshot); "" keeps leases in memory only
	jpath  string     // journal of path: path+journalSuffix

	// Immutable after NewPool/OpenPool; replaced by tests.
	now            func() time.Time                           // lease timestamps
	syncFile       func(*os.File) error                       // fsync of files (snapshot, journal) and directories
	writeFile      func(*os.File, []byte, int64) (int, error) // appends to the journal (WriteAt)
	truncFile      func(*os.File, int64) error                // truncation of the journal
	compactMin     int64                                      // the journal is compacted once it holds this many bytes, or more if the snapshot is larger
	onWait         func()                                     // if not nil, called whenever a call is about to wait for a batch (tests use it to know who waits)
	onAppend       func()                                     // if not nil, called once an append is durable, before its leases are committed in memory (tests simulate a crash there)
	onSnapshot     func()                                     // if not nil, called once a compaction's snapshot is durable, before the journal is emptied or replaced (tests simulate a crash there)
	syncCompaction bool                                       // compact in the write that found it due, under writeMu, rather than in the background (tests that check the files after each write)

	// observer, if set (ObserveWrites), is told of each durable append.
	observer atomic.Pointer[func(d time.Duration, leases int)]

	// writeMu serializes writes of the leases files and changes to the
	// set of committed leases (byID, byAddr) of a Pool made by OpenPool,
	// so that the snapshot and journal always hold every lease committed
	// before a write. It is taken before mu, and only by writers: batch
	// leaders, Pin and Flush.
	writeMu sync.Mutex
	// Guarded by writeMu: the state of the files.
	journal    *os.File      // the journal, open for appends
	journalLen int64         // length of its whole batches
	journalBad bool          // an append failed and could not be cut off: compact before the next
	compacting chan struct{} // not nil while a compaction writes its snapshot outside writeMu; closed when it is over
	snapLen    int64         // size of the snapshot
	gen        uint64        // generation of the newest snapshot that may be on disk, named by appended batches
	rewrite    bool          // the snapshot holds leases that OpenPool dropped: compact after the next commit
	// Guarded by writeMu: scratch space of the writes, reused so that
	// writing a large file does not allocate it anew each time.
	snap   []leaseEntry // snapshot of the leases, unsorted
	slots  []int32      // by address offset, index in snap or -1
	sorted []leaseEntry // snap sorted by address
	buf    []byte       // encoded snapshot
	jbuf   []byte       // encoded journal batch

	mu     sync.Mutex
	byID   map[string]lease      // guarded by mu; committed (durable) leases
	byAddr map[netip.Addr]string // guarded by mu
	next   int                   // guarded by mu; offset from first where the next free search starts
	dirty  bool                  // guarded by mu; a lease's last-assigned time changed since the snapshot was written
	// Leases waiting for a write, by identity and by address. An address
	// or identity in them is not free, and another call for the same
	// identity waits for that write rather than lease a second address.
	pendingID   map[string]*batch     // guarded by mu
	pendingAddr map[netip.Addr]*batch // guarded by mu
	open        *batch                // guarded by mu; the batch gathering new leases, nil if none
}

// lease is one identity's address and when it was first and last handed
// out (by Assign or Reserve).
type lease struct {
	addr        netip.Addr
	first, last time.Time
}

// batch is a group of new leases committed by one append to the journal
// (see Pool). Pin uses a batch of its own to hold its lease while it
// writes.
type batch struct {
	adds  map[string]lease // by identity; written under Pool.mu while the batch is open, then immutable
	start int              // guarded by Pool.mu; Pool.next before the batch's first Assign, -1 if none
	done  chan struct{}    // closed once the write succeeded or failed
	err   error            // outcome of the write; set before done is closed
}

func newBatch() *batch {
	return &batch{adds: make(map[string]lease), start: -1, done: make(chan struct{})}
}

// NewPool returns an empty Pool for subnet, which is normalized with
// netip.Prefix.Masked. The subnet must leave room for the server and at
// least one client: IPv4 /30 or shorter, IPv6 /126 or shorter. Its leases
// live in memory only; use OpenPool to keep them across restarts.
func NewPool(subnet netip.Prefix) (*Pool, error) {
	if err := checkPrefix(subnet); err != nil {
		return nil, fmt.Errorf("address pool %v: %w", subnet, err)
	}
	subnet = subnet.Masked()
	hostBits := subnet.Addr().BitLen() - subnet.Bits()
	// Usable host addresses, excluding the network address (and the
	// broadcast address for IPv4); capped so it cannot overflow.
	usable := int64(MaxLeases + 1)
	if hostBits < 32 {
		n := int64(1)<<hostBits - 1
		if subnet.Addr().Is4() {
			n--
		}
		usable = min(usable, n)
	}
	if usable < 2 {
		return nil, fmt.Errorf("address pool %v: subnet too small, need room for the server and one client (IPv4 /30, IPv6 /126 or shorter)", subnet)
	}
	server := subnet.Addr().Next()
	return &Pool{
		subnet:      subnet,
		server:      server,
		first:       server.Next(),
		size:        int(usable - 1),
		now:         func() time.Time { return time.Now().UTC().Truncate(time.Second) },
		syncFile:    (*os.File).Sync,
		writeFile:   (*os.File).WriteAt,
		truncFile:   (*os.File).Truncate,
		compactMin:  defaultCompactMin,
		byID:        make(map[string]lease),
		byAddr:      make(map[netip.Addr]string),
		pendingID:   make(map[string]*batch),
		pendingAddr: make(map[netip.Addr]*batch),
	}, nil
}

// ObserveWrites makes fn be called after each append to the journal that
// is durable, with the time its write and fsync took and the number of
// leases it holds (several, when new identities arrive together; one for
// a Pin). That time is what a new identity waits for at least before
// Assign returns, so it is the disk's share of a new client's connect
// (tunneld exports it as tunneld_lease_sync_seconds). Only a Pool made by
// OpenPool writes; fn must not call the Pool. It may be set at any time;
// nil stops it.
func (p *Pool) ObserveWrites(fn func(d time.Duration, leases int)) {
	if fn == nil {
		p.observer.Store(nil)
		return
	}
	p.observer.Store(&fn)
}

// Subnet returns the pool's (masked) subnet.
func (p *Pool) Subnet() netip.Prefix { return p.subnet }

// ServerAddr returns the server's address: the first host address of the
// subnet, e.g. 100.64.0.1 for 100.64.0.0/24. It is never leased to a client.
func (p *Pool) ServerAddr() netip.Addr { return p.server }

// Cap returns the number of client addresses the pool can lease.
func (p *Pool) Cap() int { return p.size }

// Len returns the number of leased client addresses.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byID)
}

// Assign returns the address leased to identity, leasing the lowest free
// address at or after the last one handed out (wrapping around) if identity
// has none yet. It returns ErrPoolExhausted when no address is free. The
// identity must not be empty.
//
// For a Pool made by OpenPool, a new lease is appended to the journal
// before Assign returns it; if that write fails, Assign returns the error
// and leases nothing. Concurrent Assigns of new identities share a write
// (see Pool), and concurrent Assigns of one new identity share its lease.
// An existing lease costs no write: its last-assigned time is updated in
// memory and saved with the next compaction (or Flush).
func (p *Pool) Assign(identity string) (netip.Addr, error) {
	if identity == "" {
		return netip.Addr{}, errors.New("assign address: empty identity")
	}
	p.mu.Lock()
	if a, ok := p.touchLocked(identity); ok {
		p.mu.Unlock()
		return a, nil
	}
	if b := p.pendingID[identity]; b != nil {
		// Another call is leasing an address to identity: share its
		// outcome rather than lease a second address.
		a := b.adds[identity].addr
		p.mu.Unlock()
		if err := p.await(b, false); err != nil {
			return netip.Addr{}, fmt.Errorf("assign %v to %q: %w", a, identity, err)
		}
		return a, nil
	}
	a, off, ok := p.freeLocked()
	if !ok {
		p.mu.Unlock()
		return netip.Addr{}, fmt.Errorf("assign address to %q from %v: %w", identity, p.subnet, ErrPoolExhausted)
	}
	now := p.now()
	l := lease{addr: a, first: now, last: now}
	if p.path == "" {
		p.byID[identity] = l
		p.byAddr[a] = identity
		p.next = (off + 1) % p.size
		p.mu.Unlock()
		return a, nil
	}
	b, lead := p.queueLocked(identity, l)
	if b.start < 0 {
		b.start = p.next
	}
	// The search moves on at once, so that the next Assign picks the
	// following address while this one waits; a failed write moves it
	// back (see writeBatch).
	p.next = (off + 1) % p.size
	p.mu.Unlock()
	if err := p.await(b, lead); err != nil {
		return netip.Addr{}, fmt.Errorf("assign %v to %q: %w", a, identity, err)
	}
	return a, nil
}

// Lookup returns the address leased to identity, if any.
func (p *Pool) Lookup(identity string) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.byID[identity]
	return l.addr, ok
}

// Reserve leases the fixed address addr to identity, for clients with a
// configured address. It succeeds if the lease already exists. It fails if
// addr is not a client address of the pool, if addr is leased to another
// identity (ErrAddrInUse), or if identity already holds a different address.
// Reserve addresses before serving clients: a dynamic Assign may take addr
// first. Like Assign, Reserve appends a new lease to the journal (if any)
// before it returns, sharing the write with concurrent Assigns.
func (p *Pool) Reserve(identity string, addr netip.Addr) error {
	if identity == "" {
		return errors.New("reserve address: empty identity")
	}
	if !p.IsClientAddr(addr) {
		return fmt.Errorf("reserve %v for %q: not a client address of pool %v", addr, identity, p.subnet)
	}
	for {
		p.mu.Lock()
		owner, taken := p.byAddr[addr]
		old, has := p.byID[identity]
		switch {
		case taken && owner == identity:
			p.touchLocked(identity)
			p.mu.Unlock()
			return nil
		case taken:
			p.mu.Unlock()
			return fmt.Errorf("reserve %v for %q: leased to %q: %w", addr, identity, owner, ErrAddrInUse)
		case has:
			p.mu.Unlock()
			return fmt.Errorf("reserve %v for %q: identity already holds %v", addr, identity, old.addr)
		}
		if b := p.pendingLocked(identity, addr); b != nil {
			// The outcome of that write decides which of the cases
			// above applies.
			p.mu.Unlock()
			p.await(b, false)
			continue
		}
		now := p.now()
		l := lease{addr: addr, first: now, last: now}
		if p.path == "" {
			p.byID[identity] = l
			p.byAddr[addr] = identity
			p.mu.Unlock()
			return nil
		}
		b, lead := p.queueLocked(identity, l)
		p.mu.Unlock()
		if err := p.await(b, lead); err != nil {
			return fmt.Errorf("reserve %v for %q: %w", addr, identity, err)
		}
		return nil
	}
}

// Pin leases the fixed address addr to identity, as Reserve does, but
// wins every conflict: the lease identity held before (if another address)
// is released, and a dynamic lease of addr by another identity is taken
// away; that identity is returned as evicted (it gets a new address on its
// next Assign, and its live session must be told). tunneld pins the
// addresses of its --clients file, so editing the file never fails at
// runtime on a lease made before the edit.
//
// Pin removes leases, so unlike Assign and Reserve it does not join a
// batch: it appends a batch of its own (a record that replaces whatever
// leases stand in its way, see opPin) under writeMu, and compacts if that
// makes the journal due.
func (p *Pool) Pin(identity string, addr netip.Addr) (evicted string, err error) {
	if identity == "" {
		return "", errors.New("pin address: empty identity")
	}
	if !p.IsClientAddr(addr) {
		return "", fmt.Errorf("pin %v for %q: not a client address of pool %v", addr, identity, p.subnet)
	}
	for {
		p.writeMu.Lock()
		p.mu.Lock()
		owner, taken := p.byAddr[addr]
		if taken && owner == identity {
			p.touchLocked(identity)
			p.mu.Unlock()
			p.writeMu.Unlock()
			return "", nil
		}
		if b := p.pendingLocked(identity, addr); b != nil {
			// A new lease of identity or addr waits for a write, which
			// needs writeMu: let it finish, then look again.
			p.mu.Unlock()
			p.writeMu.Unlock()
			p.await(b, false)
			continue
		}
		evicted, err = p.pinLocked(identity, addr, owner, taken)
		p.mu.Unlock()
		if err == nil && p.path != "" {
			p.maybeCompactLocked()
		}
		p.writeMu.Unlock()
		if err != nil {
			return "", fmt.Errorf("pin %v for %q: %w", addr, identity, err)
		}
		return evicted, nil
	}
}

// pinLocked does Pin's work once neither identity nor addr has a lease
// waiting for a write. owner and taken are addr's current lease. The
// caller holds writeMu and mu; pinLocked releases mu during the write.
func (p *Pool) pinLocked(identity string, addr netip.Addr, owner string, taken bool) (evicted string, err error) {
	if taken {
		evicted = owner
	}
	now := p.now()
	l := lease{addr: addr, first: now, last: now}
	if p.path != "" {
		// Hold identity and addr while the lock is released for the
		// write, so that no Assign or Reserve leases them meanwhile (an
		// addr that is taken is in byAddr, which does that already).
		b := newBatch()
		b.adds[identity] = l
		p.pendingID[identity] = b
		if !taken {
			p.pendingAddr[addr] = b
		}
		p.mu.Unlock()
		err = p.commitLocked(opPin, b.adds)
		p.mu.Lock()
		delete(p.pendingID, identity)
		if !taken {
			delete(p.pendingAddr, addr)
		}
		b.err = err
		close(b.done)
		if err != nil {
			return "", err
		}
	}
	// The leases read before the write are still current: in a Pool made
	// by OpenPool only holders of writeMu change byID and byAddr (touches
	// only update last-assigned times), and in one made by NewPool mu was
	// held throughout.
	if old, ok := p.byID[identity]; ok {
		delete(p.byAddr, old.addr)
	}
	if taken {
		delete(p.byID, owner)
	}
	p.byID[identity] = l
	p.byAddr[addr] = identity
	return evicted, nil
}

// touchLocked returns the address leased to identity, if any, and records
// that it was handed out now. The caller holds mu.
func (p *Pool) touchLocked(identity string) (netip.Addr, bool) {
	l, ok := p.byID[identity]
	if !ok {
		return netip.Addr{}, false
	}
	if now := p.now(); now.After(l.last) {
		l.last = now
		p.byID[identity] = l
		p.dirty = true
	}
	return l.addr, true
}

// freeLocked returns the lowest free client address at or after p.next
// (wrapping around) and its offset from p.first. Addresses waiting for a
// write are not free.
func (p *Pool) freeLocked() (a netip.Addr, off int, ok bool) {
	// byAddr and pendingAddr are disjoint (see pinLocked).
	if len(p.byAddr)+len(p.pendingAddr) >= p.size {
		return netip.Addr{}, 0, false
	}
	for i := range p.size {
		off := (p.next + i) % p.size
		a := addOffset(p.first, uint64(off))
		if _, taken := p.byAddr[a]; taken {
			continue
		}
		if _, pending := p.pendingAddr[a]; !pending {
			return a, off, true
		}
	}
	return netip.Addr{}, 0, false // unreachable: the count above guarantees a free address
}

// pendingLocked returns the batch of a lease of identity or addr that
// waits for a write, or nil. The caller holds mu.
func (p *Pool) pendingLocked(identity string, addr netip.Addr) *batch {
	if b := p.pendingID[identity]; b != nil {
		return b
	}
	return p.pendingAddr[addr]
}

// queueLocked adds the new lease l of identity, which holds no lease and
// has none waiting, to the open batch, opening one if there is none. It
// reports whether the caller opened it and so leads it (see await). The
// caller holds mu, and l.addr is free.
func (p *Pool) queueLocked(identity string, l lease) (b *batch, lead bool) {
	b = p.open
	if b == nil {
		b = newBatch()
		p.open = b
		lead = true
	}
	b.adds[identity] = l
	p.pendingID[identity] = b
	p.pendingAddr[l.addr] = b
	return b, lead
}

// await waits until b is written and returns the outcome of the write;
// if lead, it writes b itself.
func (p *Pool) await(b *batch, lead bool) error {
	if p.onWait != nil {
		p.onWait()
	}
	if lead {
		p.writeBatch(b)
	}
	<-b.done
	return b.err
}

// writeBatch appends the leases of b to the journal, and then commits them
// in memory, or, if the append failed, frees their addresses. Either way it
// wakes b's waiters, and then compacts if the journal is due. It waits for
// writeMu, which is held by the write before b, if any; meanwhile b stays
// open, so that the new leases that arrive in the meantime share b's
// append.
func (p *Pool) writeBatch(b *batch) {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	p.mu.Lock()
	p.open = nil // later leases go to the next batch, and b.adds stays as it is
	p.mu.Unlock()
	err := p.commitLocked(opAdd, b.adds)

	p.mu.Lock()
	for id, l := range b.adds {
		delete(p.pendingID, id)
		delete(p.pendingAddr, l.addr)
		if err == nil {
			p.byID[id] = l
			p.byAddr[l.addr] = id
		}
	}
	if err != nil && b.start >= 0 {
		// Move the search back to where b's first Assign began it, so
		// that b's freed addresses are the next handed out, as if b
		// had never been. If a later batch already picked addresses
		// past b's, that batch now starts where b did, so that its
		// own failure would move the search back past both.
		if p.open != nil && p.open.start >= 0 {
			p.open.start = b.start
		} else {
			p.next = b.start
		}
	}
	b.err = err
	close(b.done)
	p.mu.Unlock()
	if err == nil {
		p.maybeCompactLocked()
	}
}

// Flush compacts: it writes a new snapshot of every lease and empties the
// journal, if anything changed since the snapshot was written (new leases
// in the journal, or a lease's last-assigned time). Call it at shutdown,
// so that the files are left as one snapshot with the last-assigned times
// current (and now and then, if you like). Flush does nothing for a Pool
// made by NewPool.
func (p *Pool) Flush() error {
	if p.path == "" {
		return nil
	}
	p.lockNoCompaction()
	defer p.writeMu.Unlock()
	p.mu.Lock()
	dirty := p.dirty
	p.mu.Unlock()
	if !dirty && p.journalLen == 0 && !p.journalBad {
		return nil
	}
	if err := p.compactLocked(); err != nil {
		return fmt.Errorf("flush address leases: %w", err)
	}
	return nil
}

// IsClientAddr reports whether a is one of the addresses the pool hands to
// clients: inside the subnet, and not its network, server or (IPv4)
// broadcast address.
func (p *Pool) IsClientAddr(a netip.Addr) bool {
	last := addOffset(p.first, uint64(p.size-1))
	return a.IsValid() && a.Zone() == "" && a.BitLen() == p.first.BitLen() &&
		a.Compare(p.first) >= 0 && a.Compare(last) <= 0
}

// offset returns a's offset from p.first, if a is a client address of p.
func (p *Pool) offset(a netip.Addr) (int, bool) {
	if !p.IsClientAddr(a) {
		return 0, false
	}
	// Client addresses span fewer than 2^32 addresses, so the difference
	// of the low 64 bits is exact (modulo 2^64) in either family.
	x, f := a.As16(), p.first.As16()
	return int(binary.BigEndian.Uint64(x[8:]) - binary.BigEndian.Uint64(f[8:])), true
}

// addOffset returns a+n, which must not overflow a's family.
func addOffset(a netip.Addr, n uint64) netip.Addr {
	if a.Is4() {
		b := a.As4()
		v := binary.BigEndian.Uint32(b[:]) + uint32(n)
		binary.BigEndian.PutUint32(b[:], v)
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	sum := lo + n
	if sum < lo {
		hi++
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], sum)
	return netip.AddrFrom16(b)
}
