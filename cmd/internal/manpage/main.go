// Command manpage turns a tlsvpn daemon's --help text into a man page, so
// the page says what the binary says. scripts/release.sh runs it:
//
//	tunneld --help | go run ./cmd/internal/manpage -name tunneld -version 1.4.0 -date 2026-12-05 > tunneld.8
//
// The help text's parts map to sections: the Usage lines to SYNOPSIS, the
// paragraphs after them to DESCRIPTION, "Flags:" to OPTIONS (one entry per
// flag), "Examples:" and any other "Heading:" line to a section of that name
// shown as written. FILES and SEE ALSO name the units and config files the
// package installs.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

func main() {
	name := flag.String("name", "", "program name: tunneld or tunnelc")
	section := flag.String("section", "8", "manual section")
	version := flag.String("version", "", "version shown in the footer")
	date := flag.String("date", "", "date shown in the footer, YYYY-MM-DD")
	flag.Parse()
	if *name == "" {
		fmt.Fprintln(os.Stderr, "manpage: -name is required")
		os.Exit(2)
	}
	help, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "manpage:", err)
		os.Exit(1)
	}
	page := render(page{name: *name, section: *section, version: *version, date: *date}, string(help))
	if _, err := os.Stdout.WriteString(page); err != nil {
		fmt.Fprintln(os.Stderr, "manpage:", err)
		os.Exit(1)
	}
}

type page struct{ name, section, version, date string }

// files is what the package installs for each program, for FILES.
var files = map[string][][2]string{
	"tunneld": {
		{"/etc/tlsvpn/tunneld.yaml", "settings of tunneld.service; keys are the long flag names (an example: /etc/tlsvpn/tunneld.yaml.example)"},
		{"/etc/tlsvpn/server/NAME.yaml", "settings of a further server instance, tunneld@NAME.service"},
		{"/lib/systemd/system/tunneld.service, tunneld@.service", "the units: Type=notify, user tlsvpn with CAP_NET_ADMIN and CAP_NET_BIND_SERVICE only; systemctl reload re-reads the settings"},
		{"/var/lib/tlsvpn/", "state that survives restarts (client address leases), one directory per instance"},
		{"/run/tlsvpn/TUN.sock", "control socket of the instance whose --tun is TUN (tunneld0.sock by default); the control commands find it with --tun TUN or --config FILE"},
	},
	"tunnelc": {
		{"/etc/tlsvpn/client/NAME.yaml", "a client profile, started by tunnelc@NAME.service; keys are the long flag names (an example: /etc/tlsvpn/client/example.yaml.example)"},
		{"/lib/systemd/system/tunnelc@.service", "the unit: Type=notify (started once the tunnel is up), user tlsvpn with CAP_NET_ADMIN only"},
		{"/run/tlsvpn/TUN.sock", "control socket of the instance whose --tun is TUN (tunnelc0.sock by default); tunnelc status finds it with --tun TUN or --profile NAME"},
	},
}

var (
	heading  = regexp.MustCompile(`^([A-Z][A-Za-z ]*):$`)
	flagLine = regexp.MustCompile(`^\s+(?:-([A-Za-z0-9]), )?--([A-Za-z0-9-]+)(?:\[=[^\]]*\])?(?: (\S+))?\s{2,}(.*)$`)
)

// render returns the roff source of the page for help.
func render(p page, help string) string {
	var b strings.Builder
	upper := strings.ToUpper(p.name)
	fmt.Fprintf(&b, ".TH %s %s %q %q %q\n", upper, p.section, p.date, "tlsvpn "+p.version, "tlsvpn")
	section := "SYNOPSIS"
	var desc []string // DESCRIPTION paragraphs, for NAME's summary
	var body strings.Builder
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t")
		if m := heading.FindStringSubmatch(line); m != nil {
			section = strings.ToUpper(m[1])
			if section == "FLAGS" {
				section = "OPTIONS"
			}
			continue
		}
		switch {
		case strings.HasPrefix(line, "Usage: "):
			line = strings.TrimPrefix(line, "Usage: ")
			fallthrough
		case section == "SYNOPSIS":
			if line == "" {
				section = "DESCRIPTION"
				continue
			}
			body.WriteString(synopsisLine(p.name, line))
		case section == "DESCRIPTION":
			desc = append(desc, line)
		case section == "OPTIONS":
			m := flagLine.FindStringSubmatch(line)
			if m == nil {
				if line != "" {
					body.WriteString(text(strings.TrimSpace(line)) + "\n")
				}
				continue
			}
			ensureSection(&body, "OPTIONS")
			body.WriteString(".TP\n")
			if m[1] != "" {
				fmt.Fprintf(&body, "\\fB\\-%s\\fR, ", m[1])
			}
			fmt.Fprintf(&body, "\\fB\\-\\-%s\\fR", escape(m[2]))
			if m[3] != "" {
				fmt.Fprintf(&body, " \\fI%s\\fR", escape(m[3]))
			}
			body.WriteString("\n" + text(m[4]) + "\n")
		default:
			// Examples and the like: shown as written, lines kept.
			if ensureSection(&body, section) {
				body.WriteString(".nf\n")
			}
			body.WriteString(text(strings.TrimPrefix(line, "  ")) + "\n")
		}
	}
	closeVerbatim(&body)
	for len(desc) > 0 && desc[len(desc)-1] == "" {
		desc = desc[:len(desc)-1]
	}
	summary := p.name
	if len(desc) > 0 {
		first := strings.Join(strings.Fields(strings.Join(desc, " ")), " ")
		if i := strings.Index(first, ". "); i > 0 {
			first = first[:i]
		}
		summary = strings.TrimSuffix(strings.TrimPrefix(first, p.name+" is "), ".")
	}
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", p.name, text(summary))
	b.WriteString(".SH SYNOPSIS\n")
	syn, rest, _ := strings.Cut(body.String(), "\x00")
	b.WriteString(syn)
	b.WriteString(".SH DESCRIPTION\n")
	for _, l := range desc {
		if l == "" {
			b.WriteString(".PP\n")
			continue
		}
		b.WriteString(text(l) + "\n")
	}
	b.WriteString(rest)
	if fs := files[p.name]; len(fs) > 0 {
		b.WriteString(".SH FILES\n")
		for _, f := range fs {
			fmt.Fprintf(&b, ".TP\n.I %s\n%s\n", escape(f[0]), text(f[1]))
		}
	}
	other := "tunnelc"
	if p.name == "tunnelc" {
		other = "tunneld"
	}
	fmt.Fprintf(&b, ".SH SEE ALSO\n.BR %s (8),\n.BR systemctl (1),\n.BR systemd.exec (5)\n", other)
	return b.String()
}

// ensureSection starts section in body unless it is the last one
// started, and reports whether it did. The first section after SYNOPSIS
// is preceded by a NUL that separates the synopsis from the rest
// (DESCRIPTION goes between them).
func ensureSection(body *strings.Builder, section string) bool {
	s := body.String()
	if !strings.Contains(s, "\x00") {
		body.WriteString("\x00")
	} else if i := strings.LastIndex(s, ".SH "); i >= 0 && strings.HasPrefix(s[i:], ".SH "+section+"\n") {
		return false
	}
	closeVerbatim(body)
	fmt.Fprintf(body, ".SH %s\n", section)
	return true
}

// closeVerbatim ends a .nf block left open in body.
func closeVerbatim(body *strings.Builder) {
	s := body.String()
	if strings.LastIndex(s, "\n.nf\n") > strings.LastIndex(s, "\n.fi\n") {
		body.WriteString(".fi\n")
	}
}

// synopsisLine renders a Usage line: the program's name in bold, its
// arguments as written; a line that continues the one before (it does not
// start with the name) is indented.
func synopsisLine(prog, line string) string {
	line = strings.TrimSpace(line)
	name, args, _ := strings.Cut(line, " ")
	if name != prog {
		return fmt.Sprintf(".RS\n%s\n.RE\n", text(line))
	}
	return fmt.Sprintf(".B %s\n%s\n.br\n", escape(name), text(args))
}

// text escapes a line of running text for roff.
func text(s string) string {
	s = escape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// escape makes s literal in roff: backslashes and hyphens (so that
// --flags stay copyable from the rendered page).
func escape(s string) string {
	return strings.NewReplacer(`\`, `\e`, `-`, `\-`).Replace(s)
}
