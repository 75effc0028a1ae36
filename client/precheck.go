package client

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"

	"tlsvpn/internal/service"
	"tlsvpn/tun"
)

// Before it dials, tunnelc makes sure it can do its job: a handshake
// makes the server replace any live session of this identity (the user's
// other tunnelc), so a start that would only then fail to create its
// interface does harm first. Both checks fail with a *service.CannotRunError.

// initialMTU is the MTU the TUN device is created with, before the
// server's assignment; setup converges it to the MTU the server pushes.
const initialMTU = 1500

// needNetAdmin is the message for a process that cannot configure the
// network.
const needNetAdmin = "tunnelc needs root or CAP_NET_ADMIN to create the TUN interface and set its addresses and routes: " +
	"run it as root (sudo), or grant the capability (systemd AmbientCapabilities=CAP_NET_ADMIN, or setcap cap_net_admin+ep on the binary)"

// checkPrivileges fails unless the process may configure the network.
func checkPrivileges() error {
	ok, err := haveNetAdmin()
	switch {
	case err != nil:
		return service.CannotRunf("%s (cannot read the process's capabilities: %v)", needNetAdmin, err)
	case !ok:
		return service.CannotRunf("%s", needNetAdmin)
	}
	return nil
}

// openTUN creates the TUN interface name, or attaches to a free one of
// that name, and explains why it cannot: another process holds it (a
// running tunnelc or tunneld), or the name is some other kind of
// interface.
func openTUN(name string, log *slog.Logger) (tun.Device, error) {
	dev, err := tun.Open(name, initialMTU, tun.Options{Logger: log})
	switch {
	case err == nil:
		return dev, nil
	case errors.Is(err, syscall.EBUSY):
		return nil, service.CannotRunf("interface %s is in use by another process (a tunnelc or tunneld already running with --tun %s?): stop it, or pick another name with --tun", name, name)
	case errors.Is(err, syscall.EINVAL) && exists(name):
		return nil, service.CannotRunf("interface %s already exists and is not a TUN device: pick another name with --tun", name)
	case errors.Is(err, os.ErrPermission):
		return nil, service.CannotRunf("%s (%v)", needNetAdmin, err)
	}
	return nil, err
}

func exists(ifname string) bool {
	_, err := net.InterfaceByName(ifname)
	return err == nil
}
