package state

import (
	"crypto/rand"
	"sync"
	"time"
)

// Defaults of TicketKeysOptions. They are what crypto/tls does with keys
// of its own, made explicit so that a shared implementation can do the
// same: a new key every day, and tickets valid for up to seven days
// (the most RFC 8446 section 4.6.1 allows; crypto/tls refuses older
// ones anyway).
const (
	DefaultTicketKeyRotation = 24 * time.Hour
	DefaultTicketLifetime    = 7 * 24 * time.Hour
)

// TicketKeysOptions configure NewMemoryTicketKeys; the zero value is the
// production setting.
type TicketKeysOptions struct {
	// Rotation is how long a key seals new tickets before a new key
	// replaces it; 0: DefaultTicketKeyRotation.
	Rotation time.Duration
	// Lifetime is how long a ticket may be used: a replaced key is kept
	// to open tickets for this long after it sealed its last one;
	// 0: DefaultTicketLifetime.
	Lifetime time.Duration
	// Now is the clock; nil: time.Now. Tests inject one.
	Now func() time.Time
}

// MemoryTicketKeys is the TicketKeys of one process: keys from
// crypto/rand, kept in memory only and never written anywhere, so that
// whoever reads the disk cannot decrypt recorded resumptions. A new key
// is made when Keys is first called and then when the newest is
// Rotation old; a replaced key is dropped Lifetime after it was replaced.
type MemoryTicketKeys struct {
	rotation, lifetime time.Duration    // immutable
	now                func() time.Time // immutable

	mu   sync.Mutex
	keys []ticketKey // guarded by mu; newest first
	set  [][32]byte  // guarded by mu; keys' bytes, as Keys returns them
}

// ticketKey is one key and when it started sealing tickets.
type ticketKey struct {
	key     [32]byte
	created time.Time
}

// NewMemoryTicketKeys returns the in-memory TicketKeys.
func NewMemoryTicketKeys(opts TicketKeysOptions) *MemoryTicketKeys {
	k := &MemoryTicketKeys{rotation: opts.Rotation, lifetime: opts.Lifetime, now: opts.Now}
	if k.rotation <= 0 {
		k.rotation = DefaultTicketKeyRotation
	}
	if k.lifetime <= 0 {
		k.lifetime = DefaultTicketLifetime
	}
	if k.now == nil {
		k.now = time.Now
	}
	return k
}

// Keys returns the keys in force, newest first, after a rotation if one
// is due (see TicketKeys). It never fails. A new slice is returned after
// each change; the caller must not modify it.
func (k *MemoryTicketKeys) Keys() ([][32]byte, error) {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	changed := false
	if len(k.keys) == 0 || !now.Before(k.keys[0].created.Add(k.rotation)) {
		var nk ticketKey
		rand.Read(nk.key[:]) // never fails (crypto/rand)
		nk.created = now
		k.keys = append([]ticketKey{nk}, k.keys...)
		changed = true
	}
	// Key i stopped sealing when key i-1 was made: its last ticket
	// expires Lifetime after that.
	for i := 1; i < len(k.keys); i++ {
		if !now.Before(k.keys[i-1].created.Add(k.lifetime)) {
			k.keys = k.keys[:i]
			changed = true
			break
		}
	}
	if changed {
		k.set = make([][32]byte, len(k.keys))
		for i, tk := range k.keys {
			k.set[i] = tk.key
		}
	}
	return k.set, nil
}
