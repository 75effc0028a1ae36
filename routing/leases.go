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

// leaseFile is the JSON leases file, for example:
//
//	{
//	  "version": 1,
//	  "subnet": "100.64.0.0/24",
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
// was written; it only tells a changed subnet apart on load.
type leaseFile struct {
	Version int          `json:"version"`
	Subnet  netip.Prefix `json:"subnet"`
	Leases  []leaseEntry `json:"leases"`
}

type leaseEntry struct {
	Identity      string     `json:"identity"`
	Addr          netip.Addr `json:"addr"`
	FirstAssigned time.Time  `json:"first_assigned"`
	LastAssigned  time.Time  `json:"last_assigned"`
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
// the JSON file at path, so that clients keep their addresses across
// restarts of the server.
//
// OpenPool loads the leases in path (removing temporary files that a crash
// during a write may have left next to it), or creates the file (and its parent
// directory, mode 0700) if it does not exist. Afterwards every new lease is
// written before it is handed out, by replacing the whole file atomically
// (temporary file in the same directory, fsync, rename, fsync of the
// directory), so that a crash at any moment, even kill -9 or a power loss,
// leaves either the old or the new file. New leases that arrive while a
// write is in flight share the next write (see Pool).
//
// Loaded leases that cannot be honoured are dropped, and each is reported
// in warnings: addresses that are not client addresses of subnet (because
// the subnet changed, or the entry is the server, network or broadcast
// address), and second leases of one address or one identity. Dropped
// leases stay in the file until the next new lease rewrites it, so undoing
// an accidental subnet change before then loses nothing.
//
// A file that cannot be parsed is an error (*CorruptLeasesError), as is
// a file of a newer LeasesVersion: OpenPool never silently drops leases.
func OpenPool(subnet netip.Prefix, path string) (p *Pool, warnings []error, err error) {
	if path == "" {
		return nil, nil, errors.New("open address pool: empty leases file path")
	}
	p, err = NewPool(subnet)
	if err != nil {
		return nil, nil, err
	}
	p.path = path
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, nil, fmt.Errorf("create leases file directory: %w", err)
		}
		// Write the empty file now, so that an unwritable location stops
		// the server at start rather than at its first client.
		if err := p.save(p.snapshotLocked(nil, "")); err != nil {
			return nil, nil, err
		}
		return p, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read leases file: %w", err)
	}
	removeStaleTemps(path)
	f, err := parseLeases(data)
	if err != nil {
		return nil, nil, &CorruptLeasesError{Path: path, Err: err}
	}
	if f.Version > LeasesVersion {
		return nil, nil, fmt.Errorf("leases file %s has format version %d, newer than this program's %d: upgrade, or remove the file to start over (clients will then get new addresses)", path, f.Version, LeasesVersion)
	}
	return p, p.load(f), nil
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

// load adds the leases of f to the empty pool p, dropping and reporting
// those it cannot honour. It runs before p is shared.
func (p *Pool) load(f *leaseFile) (warnings []error) {
	if f.Subnet != p.subnet {
		warnings = append(warnings, fmt.Errorf("leases file %s: subnet changed from %v to %v; keeping the leases inside %v", p.path, f.Subnet, p.subnet, p.subnet))
	}
	for _, e := range f.Leases {
		a := e.Addr
		drop := func(why string) {
			warnings = append(warnings, fmt.Errorf("leases file %s: dropping lease of %v to %q: %s", p.path, a, e.Identity, why))
		}
		if !p.IsClientAddr(a) {
			drop(fmt.Sprintf("not a client address of %v", p.subnet))
			continue
		}
		if owner, ok := p.byAddr[a]; ok {
			drop(fmt.Sprintf("address already leased to %q", owner))
			continue
		}
		if old, ok := p.byID[e.Identity]; ok {
			drop(fmt.Sprintf("identity already holds %v", old.addr))
			continue
		}
		p.byID[e.Identity] = lease{addr: a, first: e.FirstAssigned, last: e.LastAssigned}
		p.byAddr[a] = e.Identity
	}
	return warnings
}

// snapshotLocked returns the pool's committed leases, plus those of adds
// (which replace an identity's lease), less the lease of without (if not
// empty), unsorted, for save. It fills p.snap, which the next snapshot
// reuses. The caller holds writeMu and mu (or is the only user of p). Only
// the copy is done under mu: sorting and encoding are left to save, so that
// reconnecting clients wait for mu as briefly as possible.
func (p *Pool) snapshotLocked(adds map[string]lease, without string) []leaseEntry {
	entries := p.snap[:0]
	for id, l := range p.byID {
		if id == without {
			continue
		}
		if _, ok := adds[id]; ok {
			continue
		}
		entries = append(entries, leaseEntry{Identity: id, Addr: l.addr, FirstAssigned: l.first, LastAssigned: l.last})
	}
	for id, l := range adds {
		entries = append(entries, leaseEntry{Identity: id, Addr: l.addr, FirstAssigned: l.first, LastAssigned: l.last})
	}
	p.snap = entries
	return entries
}

// save sorts entries by address and writes them as the leases file. The
// caller holds writeMu (or is the only user of p), which guards the
// buffers it reuses.
func (p *Pool) save(entries []leaseEntry) error {
	entries = p.sortEntries(entries)
	data, err := appendLeaseFile(p.buf[:0], p.subnet, entries)
	if err != nil {
		return fmt.Errorf("encode leases file %s: %w", p.path, err)
	}
	p.buf = data
	return writeLeases(p.path, data, p.syncFile)
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

// appendLeaseFile appends the leases file of subnet and entries to b,
// byte for byte as json.MarshalIndent(leaseFile, "", "  ") plus a newline
// would, without its reflection: for 10,000 leases MarshalIndent took
// about 18 ms and this about 1 ms (BenchmarkLeasesEncode), and it was
// what capped new identities at about 40 a second. TestAppendLeaseFile
// holds the two equal.
func appendLeaseFile(b []byte, subnet netip.Prefix, entries []leaseEntry) ([]byte, error) {
	b = append(b, "{\n  \"version\": "...)
	b = strconv.AppendInt(b, LeasesVersion, 10)
	b = append(b, ",\n  \"subnet\": \""...)
	b = subnet.AppendTo(b) // as MarshalText; never needs escaping
	b = append(b, "\",\n  \"leases\": ["...)
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
