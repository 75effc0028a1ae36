package main

// tunneld check: validate the settings and every file they name without
// starting anything (no TUN, no socket, no root needed).

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"tlsvpn/certs"
	"tlsvpn/cmd/internal/conffile"
	"tlsvpn/routing"
	"tlsvpn/server"
	"tlsvpn/state"
)

// runCheck prints "FILE: ok", or every problem of the settings one a line
// (file:line where the config file set the value), and then fails.
func runCheck(stdout io.Writer, src *source) error {
	name := src.o.config
	if name == "" {
		name = "command line"
	}
	var problems []string
	o, err := src.read()
	if err != nil {
		problems = strings.Split(err.Error(), "\n") // one problem a line
	} else {
		problems = checkOptions(o)
	}
	// In the order of the file (the command line's first).
	slices.SortStableFunc(problems, func(a, b string) int { return lineOf(name, a) - lineOf(name, b) })
	if len(problems) == 0 {
		fmt.Fprintf(stdout, "%s: ok\n", name)
		return nil
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, p)
	}
	return fmt.Errorf("%s: %d problem(s)", name, len(problems))
}

// lineOf returns the line of file that problem p names ("file:12: ..."),
// 0 if none.
func lineOf(file, p string) int {
	rest, ok := strings.CutPrefix(p, file+":")
	if !ok {
		return 0
	}
	n, _ := strconv.Atoi(rest[:max(strings.IndexByte(rest, ':'), 0)])
	return n
}

// checkOptions returns every problem of o that can be found without
// starting: values, required flags, and the files named (certificate, key,
// CA, CRL, clients policy) loaded as tunneld would load them.
func checkOptions(o options) []string {
	st, errs := parseSettings(o)
	var problems []string
	for _, err := range errs {
		problems = append(problems, o.file.Locate(err))
	}
	bad := func(flag string, err error) {
		problems = append(problems, o.file.Locate(&conffile.FlagError{Flag: flag, Err: err}))
	}
	missing := false
	for _, f := range []struct{ flag, path string }{{"cert", o.cert}, {"key", o.key}, {"ca", o.ca}, {"crl", o.crl}, {"clients", o.clients}} {
		if f.path == "" {
			missing = missing || f.flag == "cert" || f.flag == "key" || f.flag == "ca"
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad(f.flag, err)
			missing = true
		}
	}
	if !missing {
		if _, err := certs.ServerConfig(o.cert, o.key, o.ca); err != nil {
			bad("cert", err)
		} else if o.crl != "" {
			if _, err := server.OpenCRL(o.ca, o.crl); err != nil {
				bad("crl", err)
			}
		}
	}
	checkFleetFiles(o, bad)
	if dir := stateDirOf(o); dir != "" {
		if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			bad("state-dir", errors.New("not a directory"))
		}
	}
	if o.hasPolicy() && st.subnet.IsValid() && (o.subnet6 == "" || st.subnet6.IsValid()) {
		if _, err := checkPolicy(st, o.loadPolicy); err != nil {
			problems = append(problems, err.Error())
		}
	}
	return problems
}

// checkPolicy validates a clients policy as tunneld does at start and on
// a reload: read by load against address pools of the subnets of st
// (valid), with its fixed addresses pinned. The pools are in memory.
func checkPolicy(st settings, load func(pool, pool6 state.Leases) (clientPolicies, error)) (clientPolicies, error) {
	pool, err := routing.NewPool(st.subnet)
	if err != nil {
		return nil, err
	}
	var pool6 state.Leases // nil without --subnet6
	if st.subnet6.IsValid() {
		if pool6, err = routing.NewPool(st.subnet6); err != nil {
			return nil, err
		}
	}
	clients, err := load(pool, pool6)
	if err != nil {
		return nil, err
	}
	if _, err := clients.Pin(pool, pool6); err != nil {
		return nil, err
	}
	return clients, nil
}
