package main

// 'tunneld fleet publish-clients FILE': the clients policy of a fleet,
// published in etcd (see server/fleet_policy.go for how gateways apply
// it).

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"tlsvpn/cmd/internal/cli"
	"tlsvpn/state"
)

// runPublishClients validates the clients policy in args[0] against the
// settings of src, as a gateway's reload would, and publishes it.
func runPublishClients(ctx context.Context, args []string, src *source, stdout io.Writer) error {
	o, err := fleetOptions("publish-clients", "clients policy FILE", args, src)
	if err != nil {
		return err
	}
	st, errs := parseSettings(o)
	if len(errs) > 0 {
		return &cli.UsageError{Err: locateAll(o.file, errs)}
	}
	file := args[0]
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	clients, err := checkPolicy(st, func(pool, pool6 state.Leases) (clientPolicies, error) {
		c, err := parseClients(data, pool, pool6)
		if err != nil {
			return nil, atLine(file, err)
		}
		return c, nil
	})
	if err != nil {
		return fmt.Errorf("fleet publish-clients: nothing published: %w", err)
	}
	etcd, err := state.DialEtcd(o.etcdOptions())
	if err != nil {
		return err
	}
	defer etcd.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	rev, err := state.PublishPolicy(ctx, etcd, o.etcdPrefix, data)
	if err != nil {
		return fmt.Errorf("fleet publish-clients %s: %w", file, err)
	}
	fmt.Fprintf(stdout, "published %s (%d clients) to %s %s (revision %d); every gateway applies it as a reload\n", file, len(clients),
		strings.Join(o.etcdEndpoints, ","), state.PolicyKey(o.etcdPrefix), rev)
	return nil
}
