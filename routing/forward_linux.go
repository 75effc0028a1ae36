package routing

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/google/nftables"
)

// forwardingSysctls are the switches a router needs, per address family.
var forwardingSysctls = map[bool]string{
	false: "/proc/sys/net/ipv4/ip_forward",
	true:  "/proc/sys/net/ipv6/conf/all/forwarding",
}

// EnableForwarding turns on IP forwarding in the current network namespace
// (IPv4, and IPv6 too when v6 is set) for the instance named instance (its
// tunnel interface), as a server that routes between the tunnel and other
// networks needs. The returned restore function puts back only the values
// this call changed, and only once no other instance forwards: forwarding
// is one switch for the whole namespace, and an instance that started
// later found it on and so would not restore it. While the nftables table
// of another instance exists (inet tlsvpn-OTHER, or the inet tlsvpn of
// older versions; every instance that forwards has one), restore leaves
// forwarding on and logs why.
func EnableForwarding(instance string, v6 bool, log *slog.Logger) (restore func() error, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	type change struct{ path, old string }
	var changed []change
	restore = func() error {
		if len(changed) == 0 {
			return nil
		}
		if others := otherInstances(instance); len(others) > 0 {
			log.Info("leaving IP forwarding on: other instances forward", "tables", others)
			return nil
		}
		var errs []error
		for _, c := range changed {
			if err := os.WriteFile(c.path, []byte(c.old), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", c.path, err))
			}
		}
		return errors.Join(errs...)
	}
	families := []bool{false}
	if v6 {
		families = append(families, true)
	}
	for _, fam := range families {
		path := forwardingSysctls[fam]
		old, err := os.ReadFile(path)
		if err != nil {
			restore()
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if bytes.Equal(bytes.TrimSpace(old), []byte("1")) {
			continue
		}
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			restore()
			return nil, fmt.Errorf("enable forwarding (%s): %w", path, err)
		}
		changed = append(changed, change{path, string(old)})
	}
	return restore, nil
}

// otherInstances returns the nftables tables (inet family) of instances
// other than instance: tlsvpn-NAME for another NAME, and the table older
// versions shared. Errors count as none: then forwarding is restored, as
// before instances were told apart.
func otherInstances(instance string) []string {
	c, err := nftables.New()
	if err != nil {
		return nil
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil
	}
	var others []string
	for _, t := range tables {
		if t.Name == FirewallTable(instance) {
			continue
		}
		if t.Name == LegacyFirewallTable || strings.HasPrefix(t.Name, FirewallTable("")) {
			others = append(others, "inet "+t.Name)
		}
	}
	return others
}
