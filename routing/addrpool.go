package routing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"sync"
	"time"
)

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
// made by OpenPool also keeps its leases in a file, so they survive a
// restart of the server (see OpenPool).
//
// The first host address of the subnet belongs to the server
// (ServerAddr). Clients get the following addresses in ascending order,
// up to MaxLeases of them. For IPv4 the network and broadcast addresses
// are never used; for IPv6 the subnet-router anycast address (the
// all-zeros host, RFC 4291 section 2.6.1) is never used.
//
// A Pool is safe for concurrent use. New leases are committed one at a
// time (under writeMu, which is held across the file write), while
// identities that already hold a lease are answered under mu alone, so a
// slow fsync never delays a reconnecting client.
type Pool struct {
	// Immutable after NewPool/OpenPool.
	subnet netip.Prefix
	server netip.Addr
	first  netip.Addr // first client address
	size   int        // number of client addresses, >= 1
	path   string     // leases file; "" keeps leases in memory only

	// Immutable after NewPool/OpenPool; replaced by tests.
	now      func() time.Time     // lease timestamps
	syncFile func(*os.File) error // fsync of the temporary leases file and its directory

	// writeMu serializes changes to the set of leases and writes of the
	// leases file. It is taken before mu, and only holders of writeMu add
	// leases, so the set of leases cannot change while one is written.
	writeMu sync.Mutex

	mu     sync.Mutex
	byID   map[string]lease      // guarded by mu
	byAddr map[netip.Addr]string // guarded by mu
	next   int                   // guarded by mu; offset from first where the next free search starts
	dirty  bool                  // guarded by mu; a lease's last-assigned time changed since the file was written
}

// lease is one identity's address and when it was first and last handed
// out (by Assign or Reserve).
type lease struct {
	addr        netip.Addr
	first, last time.Time
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
		subnet:   subnet,
		server:   server,
		first:    server.Next(),
		size:     int(usable - 1),
		now:      func() time.Time { return time.Now().UTC().Truncate(time.Second) },
		syncFile: (*os.File).Sync,
		byID:     make(map[string]lease),
		byAddr:   make(map[netip.Addr]string),
	}, nil
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
// For a Pool made by OpenPool, a new lease is written to the leases file
// before Assign returns it; if that write fails, Assign returns the error
// and leases nothing. An existing lease costs no write: its last-assigned
// time is updated in memory and saved with the next write (or Flush).
func (p *Pool) Assign(identity string) (netip.Addr, error) {
	if identity == "" {
		return netip.Addr{}, errors.New("assign address: empty identity")
	}
	if a, ok := p.touch(identity); ok {
		return a, nil
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if a, ok := p.touch(identity); ok { // leased while we waited for writeMu
		return a, nil
	}
	p.mu.Lock()
	a, off, ok := p.freeLocked()
	p.mu.Unlock()
	if !ok {
		return netip.Addr{}, fmt.Errorf("assign address to %q from %v: %w", identity, p.subnet, ErrPoolExhausted)
	}
	if err := p.addLease(identity, a, (off+1)%p.size); err != nil {
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
// first. Like Assign, Reserve writes a new lease to the leases file (if
// any) before it returns.
func (p *Pool) Reserve(identity string, addr netip.Addr) error {
	if identity == "" {
		return errors.New("reserve address: empty identity")
	}
	if !p.IsClientAddr(addr) {
		return fmt.Errorf("reserve %v for %q: not a client address of pool %v", addr, identity, p.subnet)
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	p.mu.Lock()
	owner, taken := p.byAddr[addr]
	old, has := p.byID[identity]
	p.mu.Unlock()
	switch {
	case taken && owner == identity:
		p.touch(identity)
		return nil
	case taken:
		return fmt.Errorf("reserve %v for %q: leased to %q: %w", addr, identity, owner, ErrAddrInUse)
	case has:
		return fmt.Errorf("reserve %v for %q: identity already holds %v", addr, identity, old.addr)
	}
	if err := p.addLease(identity, addr, -1); err != nil {
		return fmt.Errorf("reserve %v for %q: %w", addr, identity, err)
	}
	return nil
}

// Pin leases the fixed address addr to identity, as Reserve does, but
// wins every conflict: the lease identity held before (if another address)
// is released, and a dynamic lease of addr by another identity is taken
// away; that identity is returned as evicted (it gets a new address on its
// next Assign, and its live session must be told). tunneld pins the
// addresses of its --clients file, so editing the file never fails at
// runtime on a lease made before the edit.
func (p *Pool) Pin(identity string, addr netip.Addr) (evicted string, err error) {
	if identity == "" {
		return "", errors.New("pin address: empty identity")
	}
	if !p.IsClientAddr(addr) {
		return "", fmt.Errorf("pin %v for %q: not a client address of pool %v", addr, identity, p.subnet)
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	p.mu.Lock()
	owner, taken := p.byAddr[addr]
	if taken && owner == identity {
		p.mu.Unlock()
		p.touch(identity)
		return "", nil
	}
	// Work on copies so a failed write changes nothing.
	byID, byAddr := maps.Clone(p.byID), maps.Clone(p.byAddr)
	if old, ok := byID[identity]; ok {
		delete(byAddr, old.addr)
	}
	if taken {
		delete(byID, owner)
		evicted = owner
	}
	now := p.now()
	byID[identity] = lease{addr: addr, first: now, last: now}
	byAddr[addr] = identity
	var f *leaseFile
	if p.path != "" {
		saved := p.byID
		p.byID = byID
		f = p.fileLocked("", lease{})
		p.byID = saved
	}
	p.mu.Unlock()
	if f != nil {
		if err := writeLeases(p.path, f, p.syncFile); err != nil {
			return "", fmt.Errorf("pin %v for %q: %w", addr, identity, err)
		}
	}
	p.mu.Lock()
	p.byID, p.byAddr = byID, byAddr
	p.mu.Unlock()
	return evicted, nil
}

// touch returns the address leased to identity, if any, and records that
// it was handed out now.
func (p *Pool) touch(identity string) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
// (wrapping around) and its offset from p.first.
func (p *Pool) freeLocked() (a netip.Addr, off int, ok bool) {
	if len(p.byAddr) >= p.size {
		return netip.Addr{}, 0, false
	}
	for i := range p.size {
		off := (p.next + i) % p.size
		a := addOffset(p.first, uint64(off))
		if _, taken := p.byAddr[a]; !taken {
			return a, off, true
		}
	}
	return netip.Addr{}, 0, false // unreachable: len(byAddr) < size guarantees a free address
}

// addLease leases the free address a to identity, which holds no lease:
// first in the leases file (if any), then in memory, so that a lease is
// never handed out before it is durable. If next >= 0 it becomes p.next.
// The caller holds writeMu, which keeps a free and identity unleased.
func (p *Pool) addLease(identity string, a netip.Addr, next int) error {
	p.mu.Lock()
	now := p.now()
	l := lease{addr: a, first: now, last: now}
	var f *leaseFile
	if p.path != "" {
		f = p.fileLocked(identity, l)
		p.dirty = false // the snapshot has every last-assigned time so far
	}
	p.mu.Unlock()
	if f != nil {
		if err := writeLeases(p.path, f, p.syncFile); err != nil {
			p.mu.Lock()
			p.dirty = true
			p.mu.Unlock()
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byID[identity] = l
	p.byAddr[a] = identity
	if next >= 0 {
		p.next = next
	}
	return nil
}

// Flush writes the leases file if a lease's last-assigned time changed
// since it was last written; new leases are always written at once. Call
// it at shutdown (or now and then) to keep last-assigned times current.
// Flush does nothing for a Pool made by NewPool.
func (p *Pool) Flush() error {
	if p.path == "" {
		return nil
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	p.mu.Lock()
	if !p.dirty {
		p.mu.Unlock()
		return nil
	}
	f := p.fileLocked("", lease{})
	p.dirty = false
	p.mu.Unlock()
	if err := writeLeases(p.path, f, p.syncFile); err != nil {
		p.mu.Lock()
		p.dirty = true
		p.mu.Unlock()
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
