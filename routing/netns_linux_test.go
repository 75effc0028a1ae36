package routing

import (
	"io/fs"
	"testing"
)

func TestSameNetNS(t *testing.T) {
	const host, other = "net:[4026531840]", "net:[4026532301]"
	for _, tc := range []struct {
		name        string
		self, init  string
		errInit     error
		wantHostDNS bool
	}{
		{"root in the host namespace", host, host, nil, true},
		{"root in a test namespace (ip netns exec)", other, host, nil, false},
		// The tunnelc@ unit runs as the tlsvpn user with CAP_NET_ADMIN: it
		// may not read PID 1's links, and must still use systemd-resolved.
		{"unit user, PID 1 not readable", host, "", fs.ErrPermission, true},
		{"PID 1 hidden (ProtectProc=invisible)", host, "", fs.ErrNotExist, true},
	} {
		if got := sameNetNS(tc.self, tc.init, tc.errInit); got != tc.wantHostDNS {
			t.Errorf("%s: sameNetNS = %v, want %v", tc.name, got, tc.wantHostDNS)
		}
	}
}
