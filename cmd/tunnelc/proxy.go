package main

// tunnelc's proxy flags: --proxy URL (or the environment's HTTPS_PROXY,
// ALL_PROXY and NO_PROXY when it is not given; "none" ignores them) and
// --proxy-auth-file. The client package does the dialing.

import (
	"log/slog"
	"strings"

	"github.com/spf13/pflag"

	"tlsvpn/client"
	"tlsvpn/cmd/internal/conffile"
	"tlsvpn/transport"
)

func addProxyFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.proxy, "proxy", "", "reach the server through a proxy: http://HOST:PORT (HTTP CONNECT; Basic authentication, or NTLM for a DOMAIN\\USER) or socks5://HOST:PORT; the proxy resolves the server's name. "+
		"Without this flag, HTTPS_PROXY or else ALL_PROXY from the environment (or their lower-case forms) is used unless NO_PROXY names the server; 'none' ignores them. "+
		"Give the user and password with --proxy-auth-file, not in the URL: a command line is visible to every user of the host")
	fs.StringVar(&o.proxyAuth, "proxy-auth-file", "", "FILE holding the proxy's USER:PASSWORD on its first line, readable only by root (mode 600), e.g. /etc/tlsvpn/client/proxy-auth; a USER written DOMAIN\\USER authenticates with NTLM, never Basic")
}

// noProxy reports whether v turns proxies off: --proxy none (or "").
func noProxy(v string) bool { return v == "" || strings.EqualFold(v, "none") }

// proxyFor returns the proxy URL for client.Config (raw, "" for none),
// where it came from (the flag or the environment variable) and the
// auth file. It warns when the URL on the command line holds a password.
func proxyFor(o options, getenv func(string) string, log *slog.Logger) (raw, from, authFile string) {
	switch {
	case o.proxySet && noProxy(o.proxy):
		return "", "", ""
	case o.proxySet:
		raw, from = o.proxy, "--proxy"
	default:
		// With several servers, the proxy of the environment is used
		// unless NO_PROXY names every one of them.
		for _, server := range o.servers {
			var err error
			if raw, from, err = transport.FromEnvironment(getenv, server); err != nil {
				log.Warn("ignoring the proxy of the environment", "err", err)
				return "", "", o.proxyAuth
			}
			if raw != "" {
				break
			}
		}
	}
	if raw == "" {
		return "", "", o.proxyAuth
	}
	if p, err := transport.ParseProxy(raw); err == nil && p.HasAuth() && o.proxyOnCmdline {
		log.Warn("the proxy's user and password in --proxy are visible to every user of this host (ps, /proc/PID/cmdline): put USER:PASSWORD in a file of mode 600 and pass --proxy-auth-file FILE")
	}
	return raw, from, o.proxyAuth
}

// checkProxy returns the problems of the proxy settings that can be found
// without connecting (tunnelc check). The environment is not read: the
// service that runs tunnelc may not have this shell's.
func checkProxy(o options) []error {
	var errs []error
	hasAuth := false
	if o.proxySet && !noProxy(o.proxy) {
		p, err := transport.ParseProxy(o.proxy)
		if err != nil {
			errs = append(errs, conffile.Flagf("proxy", "%v", err))
		} else {
			hasAuth = p.HasAuth()
			if o.fullTunnel && p.OnThisHost() {
				errs = append(errs, conffile.Flagf("proxy", "%s is on this host: it cannot be used with full-tunnel (its own connection out would be routed into the tunnel)", p))
			}
		}
	}
	if o.proxyAuth == "" {
		return errs
	}
	switch {
	case o.proxySet && noProxy(o.proxy):
		errs = append(errs, conffile.Flagf("proxy-auth-file", "given with proxy none"))
	case hasAuth:
		errs = append(errs, conffile.Flagf("proxy-auth-file", "the proxy URL holds a user and password too: keep only the file"))
	default:
		if _, _, err := client.ReadProxyAuth(o.proxyAuth); err != nil {
			errs = append(errs, conffile.Flagf("proxy-auth-file", "%v", err))
		}
	}
	return errs
}
