package service

import (
	"log/slog"

	"tlsvpn/certs"
)

// WarnKeyFile logs a warning when the private key file path can be
// accessed by its group or others (see certs.CheckKeyFileMode). It does
// not stop the daemon: the key has been loaded, and refusing to start
// would turn a loose mode into an outage.
func WarnKeyFile(log *slog.Logger, path string) {
	if err := certs.CheckKeyFileMode(path); err != nil {
		log.Warn(err.Error())
	}
}
