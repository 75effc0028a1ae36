package routing

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CheckFree checks, in the network namespace of the calling thread and
// without changing anything, that a new instance can have its tunnel
// interface ifname and its tunnel subnets: no interface is named ifname,
// and no subnet collides with an address or a directly connected route of
// an existing interface (SubnetConflict). It returns a *ConflictError if
// not, naming the process that holds an existing TUN device of that name
// when it can find it.
func CheckFree(ifname string, subnets []netip.Prefix) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open rtnetlink handle: %w", err)
	}
	defer h.Close()
	return checkFree(h, ifname, subnets)
}

func checkFree(h *netlink.Handle, ifname string, subnets []netip.Prefix) error {
	if l, err := h.LinkByName(ifname); err == nil {
		_, isTun := l.(*netlink.Tuntap)
		e := &ConflictError{Ifname: ifname, NotTUN: !isTun}
		if isTun {
			e.PID, e.Command = tunHolder(ifname)
		}
		return e
	} else if !isGone(err) {
		return fmt.Errorf("find link %s: %w", ifname, err)
	}
	used, err := hostInUse(h)
	if err != nil {
		return err
	}
	for _, s := range subnets {
		if u, ok := SubnetConflict(s, used); ok {
			return &ConflictError{Ifname: ifname, Subnet: s.Masked(), Used: u}
		}
	}
	return nil
}

// hostInUse lists the addresses of every interface, and the routes of the
// main table through an interface without a gateway.
func hostInUse(h *netlink.Handle) ([]InUse, error) {
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var used []InUse
	for _, a := range addrs {
		if p, ok := ipNetToPrefix(a.IPNet); ok {
			used = append(used, InUse{Ifname: names[a.LinkIndex], Prefix: p})
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Gw != nil || len(r.MultiPath) > 0 || r.LinkIndex == 0 {
			continue
		}
		if p, ok := routeDst(r); ok {
			used = append(used, InUse{Ifname: names[r.LinkIndex], Prefix: p, Route: true})
		}
	}
	return used, nil
}

// tunHolder returns the process that holds the TUN device named ifname
// open, found through /proc/PID/fdinfo ("iff:" names the device), or 0 and
// "" if none is visible (another PID namespace, or not a TUN device).
func tunHolder(ifname string) (pid int, command string) {
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	want := []byte("iff:\t" + ifname + "\n")
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err != nil || target != "/dev/net/tun" {
			continue
		}
		dir, num := filepath.Split(fd)
		proc := filepath.Dir(filepath.Clean(dir))
		info, err := os.ReadFile(filepath.Join(proc, "fdinfo", num))
		if err != nil || !bytes.Contains(info, want) {
			continue
		}
		pid, _ = strconv.Atoi(filepath.Base(proc))
		comm, _ := os.ReadFile(filepath.Join(proc, "comm"))
		return pid, strings.TrimSpace(string(comm))
	}
	return 0, ""
}
