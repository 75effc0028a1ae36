package state

import "sync"

// MemoryDirectory is the Directory of one gateway on its own: every
// identity it has a claim for is held by that gateway.
type MemoryDirectory struct {
	gateway string // immutable

	mu   sync.Mutex
	held map[string]bool // guarded by mu; identities with a live session
}

// NewMemoryDirectory returns an empty directory of the gateway named
// gateway (e.g. its listen address), the name Holder returns.
func NewMemoryDirectory(gateway string) *MemoryDirectory {
	return &MemoryDirectory{gateway: gateway, held: map[string]bool{}}
}

// Claim records that the gateway holds identity's session.
func (d *MemoryDirectory) Claim(identity string) {
	d.mu.Lock()
	d.held[identity] = true
	d.mu.Unlock()
}

// Release records that identity's session ended.
func (d *MemoryDirectory) Release(identity string) {
	d.mu.Lock()
	delete(d.held, identity)
	d.mu.Unlock()
}

// Holder returns the gateway if it holds identity's session.
func (d *MemoryDirectory) Holder(identity string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held[identity] {
		return d.gateway, true
	}
	return "", false
}

// Len returns the number of identities held.
func (d *MemoryDirectory) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.held)
}
