package service

import (
	"context"
	"log/slog"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// The daemons tell systemd about their state through sd_notify: the
// units (dist/systemd) are Type=notify, so systemctl start returns, and
// units ordered after them start, only once the daemon says READY=1.
// Outside systemd (NOTIFY_SOCKET unset) these functions do nothing.

// NotifyReady tells systemd the daemon is up, with a one-line status for
// systemctl status. Later calls only update the status line's meaning
// (systemd ignores a repeated READY=1).
func NotifyReady(log *slog.Logger, status string) {
	notify(log, "READY=1", "STATUS="+status)
}

// NotifyStatus updates the status line systemctl status shows.
func NotifyStatus(log *slog.Logger, status string) {
	notify(log, "STATUS="+status)
}

// NotifyReloading tells systemd a reload has begun (RELOADING=1, with
// the monotonic clock systemd 253 and later want); the returned function
// says it is over (READY=1), so that systemctl reload returns only once
// the new configuration applies. Reload paths start with
//
//	defer service.NotifyReloading(log)()
func NotifyReloading(log *slog.Logger) (done func()) {
	notify(log, "RELOADING=1", strings.TrimSpace(daemon.SdNotifyMonotonicUsec()), "STATUS=reloading")
	return func() { notify(log, "READY=1", "STATUS=reloaded") }
}

// NotifyStopping sends STOPPING=1 as soon as ctx ends (SIGTERM, SIGINT),
// before the daemon takes its time to say goodbye to its peers and remove
// its routes.
func NotifyStopping(ctx context.Context, log *slog.Logger) {
	context.AfterFunc(ctx, func() { notify(log, "STOPPING=1", "STATUS=stopping") })
}

func notify(log *slog.Logger, fields ...string) {
	if _, err := daemon.SdNotify(false, strings.Join(fields, "\n")); err != nil {
		log.Warn("telling systemd the service state (sd_notify)", "state", fields[0], "err", err)
	}
}
