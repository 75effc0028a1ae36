// Package state holds the gateway state that a fleet of gateways has
// to share, behind small interfaces: the address leases (Leases),
// the revocation list (Revocation), the TLS session ticket keys
// (TicketKeys) and the directory of who holds which client identity
// (Directory). package server uses only these interfaces; what it is
// given decides where the state lives.
//
// The implementations of one gateway on its own (tunneld's default,
// state: file), and when each is used:
//
//   - Leases: *routing.Pool. OpenLeases returns one that keeps its leases
//     in a snapshot file and a journal in the instance's state directory
//     (tunneld's default), or in memory only when no file is given
//     (tunneld --state-dir "").
//   - Revocation: *certs.Revocation, one CRL file signed by the CA,
//     reloaded when it changes (tunneld --crl). Without --crl there is
//     none, and the server checks only certificate expiry.
//   - TicketKeys: MemoryTicketKeys, random keys made in the process and
//     rotated on a schedule; they are never written anywhere, so a
//     restart ends every ticket (clients then make a full handshake).
//   - Directory: MemoryDirectory, the identities this process serves.
//
// A fleet of gateways (tunneld state: etcd) shares them through etcd:
// OpenEtcd connects a gateway and hands out EtcdLeases, EtcdDirectory,
// the CRL published in etcd (Etcd.Revocation, a certs.Revocation reading
// the key) and EtcdTicketKeys; see etcd.go and docs/FLEET.md. Package
// etcdtest starts real etcd servers for the tests.
//
// Every interface is written so that a shared store can implement it:
// methods are safe for concurrent use, errors are reported where a
// remote store could fail, and what must not block is said so.
package state

import (
	"crypto/tls"
	"net/netip"
	"time"
)

// Leases hands out the tunnel addresses of one subnet to client
// identities: the same identity gets the same address for as long as its
// lease is kept, also across restarts when the leases persist. It is
// safe for concurrent use. tunnel.Assigner is its Assign method.
type Leases interface {
	// Subnet is the (masked) subnet the addresses come from.
	Subnet() netip.Prefix
	// ServerAddr is the gateway's own address in Subnet (its first host
	// address); it is never leased.
	ServerAddr() netip.Addr
	// IsClientAddr reports whether a is an address Assign or Pin may
	// lease (inside Subnet, not the server's, not network or broadcast).
	IsClientAddr(a netip.Addr) bool
	// Assign returns the address leased to identity, leasing a free one
	// first if it has none. The lease is durable when Assign returns (a
	// persistent store has written it), so a client is never told an
	// address another could be given after a crash. An error means no
	// address: the pool is full, or the store cannot be written.
	Assign(identity string) (netip.Addr, error)
	// Lookup returns the address leased to identity, if any; it leases
	// nothing.
	Lookup(identity string) (netip.Addr, bool)
	// Pin leases the fixed address addr to identity (a clients policy's
	// address), taking it from the identity that held it, which it
	// returns ("" if none): that identity's next Assign gets another
	// address. identity's previous address, if different, is freed.
	Pin(identity string, addr netip.Addr) (evicted string, err error)
	// Flush makes everything leased so far durable in compact form (a
	// snapshot); the gateway calls it when it stops. In memory it does
	// nothing.
	Flush() error
}

// Revocation decides whether a verified client certificate may still be
// used: its issuer's revocation list, in force and not expired, does not
// list it, and it is within its validity. It fails closed: when no usable
// list is in force, every certificate is refused. It is safe for
// concurrent use; VerifyConnection must not wait for a reload.
type Revocation interface {
	// VerifyConnection returns nil if the client certificate of cs (the
	// verified chain of a handshake, full or resumed, or of a live
	// session) may be used now, else why not. It has the signature of
	// tls.Config.VerifyConnection.
	VerifyConnection(cs tls.ConnectionState) error
	// NextUpdate returns when the list in force expires, or why no list
	// is in force (the last reload failed, or it has expired).
	NextUpdate() (time.Time, error)
	// Reload reads the list again and enforces it if valid; on failure
	// it returns why and refuses every certificate until a later reload
	// succeeds.
	Reload() error
	// ReloadIfChanged reloads, as Reload, if the source changed since
	// the last reload attempt, and reports whether it did.
	ReloadIfChanged() (reloaded bool, err error)
	// Path names where the list comes from, for logs and status (a
	// file; a key for a shared store).
	Path() string
}

// TicketKeys holds the keys that seal and open TLS session tickets
// (RFC 8446 section 4.6.1): a client resumes with a ticket on any gateway
// whose key set still holds the key that sealed it. It is safe for
// concurrent use.
type TicketKeys interface {
	// Keys returns the key set in force now, newest first: new tickets
	// are sealed with the first key, and every key opens tickets. When
	// the newest key is due to be replaced, Keys rotates first: it makes
	// a new key and drops those whose tickets can no longer be valid.
	// The gateway calls it at start and then periodically, and hands the
	// result to tls.Config.SetSessionTicketKeys whenever it changed. On
	// error the gateway keeps the set it has. The result is never empty
	// without an error; the caller must not modify it.
	Keys() ([][32]byte, error)
}

// Directory records which gateway holds the live session of each client
// identity (one session per identity in a fleet too: a client that
// connects to another gateway replaces its session there). It is safe for
// concurrent use.
type Directory interface {
	// Claim records that this gateway now holds identity's session. It
	// must not block: the gateway calls it while it registers the
	// session, so a shared implementation queues the write.
	Claim(identity string)
	// Release records that identity's session on this gateway ended (and
	// no newer one took its place). It must not block either, and a
	// Release after a later gateway's Claim must not undo that claim.
	Release(identity string)
	// Holder returns the gateway holding identity's session, if any.
	Holder(identity string) (gateway string, ok bool)
}
