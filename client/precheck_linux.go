package client

import "golang.org/x/sys/unix"

// haveNetAdmin reports whether CAP_NET_ADMIN is in the process's
// effective set (root has it unless it was dropped, as in some
// containers; a systemd unit can give it to another user).
func haveNetAdmin() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // capability bits 0-31, 32-63
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, err
	}
	return data[unix.CAP_NET_ADMIN/32].Effective&(1<<(unix.CAP_NET_ADMIN%32)) != 0, nil
}
