package cli

import (
	"context"
	"errors"
	"log/slog"

	"tlsvpn/routing"
)

// Cleanup removes what a previous run of either daemon may have left
// behind after a crash: routes with the project's route protocol, the
// addresses on ifname (if it still exists), and the project's nftables
// table. It touches nothing else. For systemd: ExecStopPost=... --cleanup.
func Cleanup(ctx context.Context, ifname string, log *slog.Logger) error {
	errRoutes := routing.Cleanup(ctx, ifname)
	errTable := routing.CleanupFirewall(ctx, routing.FirewallOptions{Logger: log})
	restored, errDNS := routing.RestoreResolvConf()
	if restored {
		log.Info("restored the resolv.conf a crashed tunnelc had replaced", "file", routing.ResolvConf)
	}
	if err := errors.Join(errRoutes, errTable, errDNS); err != nil {
		return err
	}
	log.Info("cleanup done: removed our routes (protocol 116), addresses on the tunnel interface and the nftables table, where present", "ifname", ifname)
	return nil
}
