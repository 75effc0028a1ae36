//go:build !linux

package client

import (
	"context"
	"log/slog"

	"tlsvpn/tunnel"
)

// watch is Linux-only; elsewhere keepalives detect a dead path.
func (r *roamWatch) watch(ctx context.Context, c *tunnel.Client, log *slog.Logger) {}
