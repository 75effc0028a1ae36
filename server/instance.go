package server

// What keeps two tunneld instances apart. An instance is named by its TUN
// interface (--tun); it has its own nftables table (inet tlsvpn-TUN), its
// own state directory (/var/lib/tlsvpn/TUN by default, held with a lock),
// its own control socket and its own listen address. A start that would
// collide with another instance is refused before it creates or changes
// anything on the host.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"tlsvpn/routing"
)

// lockFile, in a state directory, is held (flock) by the instance that
// uses the directory, and names it. The instance --tun names by default
// (DefaultTUN) is the one whose leases an older tunneld (which kept them
// in StateRoot) held.
const lockFile = "lock"

// leaseFiles are the files of a state directory that migrateLeases moves:
// the leases of --subnet and --subnet6 and their journals.
var leaseFiles = []string{"leases.json", "leases.json.journal", "leases6.json", "leases6.json.journal"}

// instance is what claimInstance took for a starting tunneld.
type instance struct {
	stateDir string   // "" keeps leases in memory
	lock     *os.File // holds stateDir's lock until closed; nil without stateDir
}

// release gives up the state directory's lock.
func (in *instance) release() {
	if in.lock != nil {
		in.lock.Close()
	}
}

// claimInstance checks that this instance collides with no other and
// takes its state directory, changing nothing on the host: the TUN name
// must be free and the tunnel subnets must not overlap an address or
// connected route of any interface (read only); then the state directory
// is locked, so that a second instance configured with the same one is
// refused. Leases an older tunneld kept in StateRoot move into the
// default instance's directory. (New binds the listen address before it
// creates the TUN device, so that a taken one fails with the bind's own
// error before anything else.) On error nothing is held.
func claimInstance(c Config, log *slog.Logger) (*instance, error) {
	if err := routing.CheckFree(c.TUN, c.tunnelSubnets()); err != nil {
		return nil, refusal(c.TUN, err)
	}
	in := &instance{stateDir: c.stateDir()}
	if in.stateDir == "" {
		return in, nil
	}
	var err error
	if in.lock, err = lockStateDir(in.stateDir, c.TUN); err != nil {
		return nil, err
	}
	if c.StateDir == "" && c.TUN == DefaultTUN {
		if err := migrateLeases(StateRoot, in.stateDir, log); err != nil {
			in.release()
			return nil, err
		}
	}
	return in, nil
}

// refusal explains a conflict found by routing.CheckFree with the flag
// that caused it.
func refusal(tun string, err error) error {
	var c *routing.ConflictError
	if !errors.As(err, &c) {
		return err
	}
	if !c.Subnet.IsValid() {
		return fmt.Errorf("--tun %s: %w: another instance (or another program) uses this name; give each instance its own --tun", tun, c)
	}
	flag := "--subnet"
	if c.Subnet.Addr().Is6() {
		flag = "--subnet6"
	}
	return fmt.Errorf("%s %v: %w: the same addresses would be on two interfaces; pick a subnet no interface uses", flag, c.Subnet, c)
}

// lockStateDir creates dir (mode 0700) if needed and takes the exclusive
// lock on its lock file, which then names this process and instance. If
// another process holds it, the error names that one.
func lockStateDir(dir, tun string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	if err := flockExclusive(f); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := string(holder)
			if who == "" {
				who = "another process"
			}
			return nil, fmt.Errorf("--state-dir %s is in use by %s; give each instance its own --state-dir (the default is %s/TUN)", dir, who, StateRoot)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "tunneld --tun %s (pid %d)", tun, os.Getpid())
	}
	return f, nil
}

// migrateLeases moves the lease files an older tunneld kept in from (the
// one state directory every instance shared) into to, the default
// instance's own, when to has none yet; it logs what it moved.
func migrateLeases(from, to string, log *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(to, leaseFiles[0])); err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil // the instance has its leases (or we cannot tell): leave both alone
	}
	var moved []string
	for _, name := range leaseFiles {
		src := filepath.Join(from, name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if err := os.Rename(src, filepath.Join(to, name)); err != nil {
			return fmt.Errorf("move the leases of an older tunneld to %s: %w", to, err)
		}
		moved = append(moved, name)
	}
	if len(moved) > 0 {
		log.Info("moved the leases an older tunneld kept in the shared state directory to this instance's", "from", from, "to", to, "files", moved)
	}
	return nil
}
