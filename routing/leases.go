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
// leaves either the old or the new file.
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
		if err := writeLeases(path, p.fileLocked("", lease{}), p.syncFile); err != nil {
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

// fileLocked returns the leases file for the pool's leases, plus the
// lease l of identity if identity is not empty. The caller holds mu (or
// is the only user of p).
func (p *Pool) fileLocked(identity string, l lease) *leaseFile {
	f := &leaseFile{
		Version: LeasesVersion,
		Subnet:  p.subnet,
		Leases:  make([]leaseEntry, 0, len(p.byID)+1),
	}
	for id, l := range p.byID {
		f.Leases = append(f.Leases, leaseEntry{Identity: id, Addr: l.addr, FirstAssigned: l.first, LastAssigned: l.last})
	}
	if identity != "" {
		f.Leases = append(f.Leases, leaseEntry{Identity: identity, Addr: l.addr, FirstAssigned: l.first, LastAssigned: l.last})
	}
	slices.SortFunc(f.Leases, func(a, b leaseEntry) int { return a.Addr.Compare(b.Addr) })
	return f
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

// writeLeases replaces the file at path with f atomically: it writes a
// temporary file in the same directory, syncs it, renames it over path and
// syncs the directory, so that after a crash path holds either the old or
// the new contents, and after a successful return the new contents are
// durable. syncFile is (*os.File).Sync except in tests.
func writeLeases(path string, f *leaseFile, syncFile func(*os.File) error) (err error) {
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode leases file %s: %w", path, err)
	}
	data = append(data, '\n')
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
