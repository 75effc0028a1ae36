package routing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// SetDNS makes the system resolve names through servers while the tunnel
// is up: through systemd-resolved on ifname when it runs (all domains,
// "~."), otherwise by writing ResolvConf. restore puts back what was there.
func SetDNS(ctx context.Context, ifname string, servers []netip.Addr, log *slog.Logger) (restore func() error, err error) {
	if len(servers) == 0 {
		return func() error { return nil }, nil
	}
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.String()
	}
	// systemd-resolved manages the links of the host's network namespace
	// only; inside another one, the (bind-mounted) resolv.conf is ours.
	if _, err := os.Stat("/run/systemd/resolve/resolv.conf"); err == nil && inInitNetNS() {
		if path, err := exec.LookPath("resolvectl"); err == nil {
			if out, err := exec.CommandContext(ctx, path, append([]string{"dns", ifname}, addrs...)...).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("resolvectl dns %s: %v: %s", ifname, err, out)
			}
			if out, err := exec.CommandContext(ctx, path, "domain", ifname, "~.").CombinedOutput(); err != nil {
				exec.Command(path, "revert", ifname).Run()
				return nil, fmt.Errorf("resolvectl domain %s: %v: %s", ifname, err, out)
			}
			log.Info("DNS through the tunnel (systemd-resolved)", "ifname", ifname, "servers", strings.Join(addrs, ","))
			return func() error {
				if out, err := exec.Command(path, "revert", ifname).CombinedOutput(); err != nil {
					return fmt.Errorf("resolvectl revert %s: %v: %s", ifname, err, out)
				}
				return nil
			}, nil
		}
	}
	old, err := os.ReadFile(ResolvConf)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read %s: %w", ResolvConf, err)
	}
	if saved, ours, err := savedResolvConf(old); ours && err == nil {
		old = saved // left by a crashed run: keep the real original
	}
	mine := resolvConfContent(ifname, servers, old)
	if err := os.WriteFile(ResolvConf, mine, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", ResolvConf, err)
	}
	log.Info("DNS through the tunnel", "file", ResolvConf, "servers", strings.Join(addrs, ","))
	return func() error {
		// Put the original back only if the file is still ours: if
		// something else (a DHCP client) rewrote it meanwhile, that is
		// newer than what we saved.
		if cur, err := os.ReadFile(ResolvConf); err == nil && !bytes.Equal(cur, mine) {
			log.Warn("not restoring DNS settings: the file changed while the tunnel was up", "file", ResolvConf)
			return nil
		}
		if err := os.WriteFile(ResolvConf, old, 0o644); err != nil {
			return fmt.Errorf("restore %s: %w", ResolvConf, err)
		}
		return nil
	}, nil
}

// inInitNetNS reports whether this process shares PID 1's network
// namespace.
func inInitNetNS() bool {
	self, err := os.Readlink("/proc/self/ns/net")
	init, errInit := os.Readlink("/proc/1/ns/net")
	return err == nil && sameNetNS(self, init, errInit)
}

// sameNetNS decides from the links of /proc/self/ns/net and
// /proc/1/ns/net (errInit: reading the latter) whether they are the same
// namespace. A process that may not look at PID 1 (not root: the
// tunnelc@ unit's tlsvpn user with CAP_NET_ADMIN, or /proc mounted with
// hidepid) is a service in the host's namespace: a test or a user who put
// it in another namespace is root there.
func sameNetNS(self, init string, errInit error) bool {
	if errors.Is(errInit, fs.ErrPermission) || errors.Is(errInit, fs.ErrNotExist) {
		return true
	}
	return errInit == nil && self == init
}
