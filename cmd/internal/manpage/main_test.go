package main

import (
	"strings"
	"testing"
)

const help = `Usage: tunnelc --server HOST:PORT [flags]
       tunnelc status [--json]
                    (ask a running tunnelc)

tunnelc is the tlsvpn client. It connects to tunneld.
Second paragraph line.

Flags:
      --server string           server HOST:PORT (required)
  -v, --verbose                 say more
      --kill-switch[=true|false]   drop what leaves outside the tunnel
      --version[=true|false]    print the version

Examples:
  # connect; a line that starts with a dot follows
  tunnelc --server vpn.example.com:443 \
.hidden
`

func TestRender(t *testing.T) {
	got := render(page{name: "tunnelc", section: "8", version: "1.4.0", date: "2026-12-05"}, help)
	for _, want := range []string{
		".TH TUNNELC 8 \"2026-12-05\" \"tlsvpn 1.4.0\" \"tlsvpn\"\n",
		".SH NAME\ntunnelc \\- the tlsvpn client\n",
		".SH SYNOPSIS\n.B tunnelc\n\\-\\-server HOST:PORT [flags]\n.br\n.B tunnelc\nstatus [\\-\\-json]\n.br\n.RS\n(ask a running tunnelc)\n.RE\n.SH DESCRIPTION\n",
		"It connects to tunneld.\nSecond paragraph line.\n.SH OPTIONS\n",
		".TP\n\\fB\\-\\-server\\fR \\fIstring\\fR\nserver HOST:PORT (required)\n",
		".TP\n\\fB\\-v\\fR, \\fB\\-\\-verbose\\fR\nsay more\n",
		".TP\n\\fB\\-\\-kill\\-switch\\fR\ndrop what leaves outside the tunnel\n",
		".TP\n\\fB\\-\\-version\\fR\nprint the version\n",
		// Examples keep their lines (.nf), backslashes and leading dots
		// are literal.
		".SH EXAMPLES\n.nf\n# connect; a line that starts with a dot follows\ntunnelc \\-\\-server vpn.example.com:443 \\e\n\\&.hidden\n.fi\n",
		".SH FILES\n.TP\n.I /etc/tlsvpn/client/NAME.yaml\n",
		".SH SEE ALSO\n.BR tunneld (8),\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("page lacks %q\npage:\n%s", want, got)
		}
	}
	if strings.Contains(got, "\x00") {
		t.Error("page contains the internal NUL separator")
	}
}
