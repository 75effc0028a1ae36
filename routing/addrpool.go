package routing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
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
// the Pool, so an identity gets the same address on every reconnect.
//
// The first host address of the subnet belongs to the server
// (ServerAddr). Clients get the following addresses in ascending order,
// up to MaxLeases of them. For IPv4 the network and broadcast addresses
// are never used; for IPv6 the subnet-router anycast address (the
// all-zeros host, RFC 4291 section 2.6.1) is never used.
//
// A Pool is safe for concurrent use.
type Pool struct {
	// Immutable after NewPool.
	subnet netip.Prefix
	server netip.Addr
	first  netip.Addr // first client address
	size   int        // number of client addresses, >= 1

	mu     sync.Mutex
	byID   map[string]netip.Addr // guarded by mu
	byAddr map[netip.Addr]string // guarded by mu
	next   int                   // guarded by mu; offset from first where the next free search starts
}

// NewPool returns an empty Pool for subnet, which is normalized with
// netip.Prefix.Masked. The subnet must leave room for the server and at
// least one client: IPv4 /30 or shorter, IPv6 /126 or shorter.
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
		subnet: subnet,
		server: server,
		first:  server.Next(),
		size:   int(usable - 1),
		byID:   make(map[string]netip.Addr),
		byAddr: make(map[netip.Addr]string),
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
func (p *Pool) Assign(identity string) (netip.Addr, error) {
	if identity == "" {
		return netip.Addr{}, errors.New("assign address: empty identity")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.byID[identity]; ok {
		return a, nil
	}
	if len(p.byAddr) >= p.size {
		return netip.Addr{}, fmt.Errorf("assign address to %q from %v: %w", identity, p.subnet, ErrPoolExhausted)
	}
	for i := range p.size {
		off := (p.next + i) % p.size
		a := addOffset(p.first, uint64(off))
		if _, taken := p.byAddr[a]; taken {
			continue
		}
		p.leaseLocked(identity, a)
		p.next = (off + 1) % p.size
		return a, nil
	}
	// Unreachable: len(byAddr) < size guarantees a free address.
	return netip.Addr{}, fmt.Errorf("assign address to %q from %v: %w", identity, p.subnet, ErrPoolExhausted)
}

// Lookup returns the address leased to identity, if any.
func (p *Pool) Lookup(identity string) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.byID[identity]
	return a, ok
}

// Reserve leases the fixed address addr to identity, for clients with a
// configured address. It succeeds if the lease already exists. It fails if
// addr is not a client address of the pool, if addr is leased to another
// identity (ErrAddrInUse), or if identity already holds a different address.
// Reserve addresses before serving clients: a dynamic Assign may take addr
// first.
func (p *Pool) Reserve(identity string, addr netip.Addr) error {
	if identity == "" {
		return errors.New("reserve address: empty identity")
	}
	if !p.contains(addr) {
		return fmt.Errorf("reserve %v for %q: not a client address of pool %v", addr, identity, p.subnet)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if owner, ok := p.byAddr[addr]; ok {
		if owner == identity {
			return nil
		}
		return fmt.Errorf("reserve %v for %q: leased to %q: %w", addr, identity, owner, ErrAddrInUse)
	}
	if old, ok := p.byID[identity]; ok {
		return fmt.Errorf("reserve %v for %q: identity already holds %v", addr, identity, old)
	}
	p.leaseLocked(identity, addr)
	return nil
}

func (p *Pool) leaseLocked(identity string, a netip.Addr) {
	p.byID[identity] = a
	p.byAddr[a] = identity
}

// contains reports whether a is one of the pool's client addresses.
func (p *Pool) contains(a netip.Addr) bool {
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
