package cli

import (
	"context"
	"errors"
	"log/slog"

	"tlsvpn/routing"
)

// Cleanup removes what a previous run of the instance named ifname (its
// --tun) may have left behind after a crash: its routes (protocol 116 on
// ifname) and addresses on ifname (if it still exists), bypass routes
// (protocol 117) of instances that are gone, and the instance's nftables
// table inet tlsvpn-IFNAME (with the table older versions shared, inet
// tlsvpn, when it belongs to this instance or to none that runs). Other
// instances' routes, addresses and tables are untouched, as is everything
// else. For systemd: ExecStopPost=... --cleanup.
func Cleanup(ctx context.Context, ifname string, log *slog.Logger) error {
	errRoutes := routing.Cleanup(ctx, ifname)
	errTable := routing.CleanupFirewall(ctx, routing.FirewallOptions{Instance: ifname, Logger: log})
	restored, errDNS := routing.RestoreResolvConf(ifname)
	if restored {
		log.Info("restored the resolv.conf a crashed tunnelc had replaced", "file", routing.ResolvConf)
	}
	if err := errors.Join(errRoutes, errTable, errDNS); err != nil {
		return err
	}
	log.Info("cleanup done: removed this instance's routes and addresses on its tunnel interface, bypass routes of gone instances and its nftables table, where present",
		"ifname", ifname, "table", "inet "+routing.FirewallTable(ifname))
	return nil
}
