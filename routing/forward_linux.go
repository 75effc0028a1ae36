package routing

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// forwardingSysctls are the switches a router needs, per address family.
var forwardingSysctls = map[bool]string{
	false: "/proc/sys/net/ipv4/ip_forward",
	true:  "/proc/sys/net/ipv6/conf/all/forwarding",
}

// EnableForwarding turns on IP forwarding in the current network namespace
// (IPv4, and IPv6 too when v6 is set), as a server that routes between the
// tunnel and other networks needs. The returned restore function puts back
// only the values this call changed.
func EnableForwarding(v6 bool) (restore func() error, err error) {
	type change struct{ path, old string }
	var changed []change
	restore = func() error {
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
