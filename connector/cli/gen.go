package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
)

// The manual page and the shell completion are generated from the command line's own model, so
// they never disagree with --help. `make deb` runs both and the package ships the results
// (/usr/share/man/man1/pbxbridge.1.gz, /usr/share/bash-completion/completions/pbxbridge).

// ManCmd prints the manual page.
type ManCmd struct{}

// Run writes pbxbridge(1) in roff (man) format to stdout.
func (c *ManCmd) Run(g *Globals, k *kong.Kong) error {
	return writeMan(g.Stdout, k.Model, g.Version)
}

// CompletionCmd prints a completion script.
type CompletionCmd struct {
	Shell string `arg:"" enum:"bash" default:"bash" help:"Shell (bash)."`
}

// Run writes the completion script for the shell to stdout.
func (c *CompletionCmd) Run(g *Globals, k *kong.Kong) error {
	return writeBashCompletion(g.Stdout, k.Model)
}

// visibleCommands returns the command nodes under n (depth first, in declaration order),
// hidden ones left out.
func visibleCommands(n *kong.Node) []*kong.Node {
	var out []*kong.Node
	for _, c := range n.Children {
		if c.Type != kong.CommandNode || c.Hidden {
			continue
		}
		out = append(out, c)
		out = append(out, visibleCommands(c)...)
	}
	return out
}

// roff escapes text for a roff line: backslashes, and a leading dot or quote.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// flagLine is a flag as the man page names it: \-\-config=FILE, \-c.
func flagLine(f *kong.Flag) string {
	name := "--" + f.Name
	if !f.IsBool() {
		name += "=" + f.FormatPlaceHolder()
	}
	if f.Short != 0 {
		name = "-" + string(f.Short) + ", " + name
	}
	return `\fB` + roff(name) + `\fR`
}

func flagHelp(f *kong.Flag) string {
	h := f.Help
	if f.HasDefault && f.Default != "" && !f.IsBool() {
		h += " Default: " + f.Default + "."
	}
	if len(f.Envs) > 0 {
		h += " Environment: " + strings.Join(f.Envs, ", ") + "."
	}
	return roff(h)
}

func writeMan(w io.Writer, app *kong.Application, version string) error {
	b := &strings.Builder{}
	p := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	p(`.TH PBXBRIDGE 1 "" "pbxbridge %s" "User Commands"`, roff(version))
	p(".SH NAME")
	p(`pbxbridge \- %s`, roff(app.Help))
	p(".SH SYNOPSIS")
	p(`\fBpbxbridge\fR [\fIOPTIONS\fR] \fICOMMAND\fR [\fIARGUMENTS\fR]`)
	p(".SH DESCRIPTION")
	p("pbxbridge reads call events from Asterisk (AMI or ARI), keeps every finished call in a durable local outbox")
	p("and delivers it to the configured CRM accounts. The daemon runs as the systemd unit pbxbridge.service")
	p(`(\fBpbxbridge run\fR); the other commands check the configuration and talk to the running daemon.`)
	p(".PP")
	p("Run as root, the commands that use the state directory (run, doctor, crm test, crm auth) first become its owner")
	p("(the pbxbridge user), so that what they write stays usable by the service; they say so on standard error.")
	p(".SH OPTIONS")
	for _, f := range app.Flags {
		if f.Hidden {
			continue
		}
		p(".TP")
		p("%s", flagLine(f))
		p("%s", flagHelp(f))
	}
	p(".SH COMMANDS")
	for _, n := range visibleCommands(app.Node) {
		if !n.Leaf() {
			continue // a group: its commands follow
		}
		p(".SS %q", "pbxbridge "+roff(strings.TrimSuffix(n.Summary(), " [flags]")))
		p("%s", roff(n.Help))
		if n.Detail != "" {
			p(".PP")
			p("%s", roff(n.Detail))
		}
		for _, a := range n.Positional {
			p(".TP")
			p(`\fI%s\fR`, roff(strings.ToUpper(a.Name)))
			p("%s", roff(a.Help))
		}
		for _, f := range n.Flags {
			if f.Hidden {
				continue
			}
			p(".TP")
			p("%s", flagLine(f))
			p("%s", flagHelp(f))
		}
	}
	p(".SH FILES")
	for _, f := range [][2]string{
		{"/etc/pbxbridge/pbxbridge.yaml", "The configuration (pbxbridge config sample prints the documented sample)."},
		{"/etc/default/pbxbridge", "Secrets as environment variables (pbxbridge config env lists them); read by the unit, and by the command line when it runs as root."},
		{"/etc/pbxbridge/licenses.d", "Licences (pbxbridge license install)."},
		{"/var/lib/pbxbridge", "State: the outbox, CRM tokens, licence state, the admin socket."},
		{"/usr/share/doc/pbxbridge", "README.md, docs/operations.md (operations, metrics, alerts), the CRM guides."},
	} {
		p(".TP")
		p(`\fI%s\fR`, roff(f[0]))
		p("%s", roff(f[1]))
	}
	p(".SH EXIT STATUS")
	p("0 on success, 1 when a command fails, 2 for a usage error; status exits 3 when the daemon is not ready;")
	p("license verify documents its own statuses.")
	p(".SH SEE ALSO")
	p(`\fBsystemctl\fR(1), \fBjournalctl\fR(1), /usr/share/doc/pbxbridge/docs/operations.md`)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeBashCompletion writes a static bash completion: commands by position, then the flags of
// the command typed so far.
func writeBashCompletion(w io.Writer, app *kong.Application) error {
	words := map[string][]string{} // command path ("" = top) → sub-commands and flags
	var walk func(n *kong.Node, path string, inherited []string)
	walk = func(n *kong.Node, path string, inherited []string) {
		flags := append([]string(nil), inherited...)
		for _, f := range n.Flags {
			if !f.Hidden {
				flags = append(flags, "--"+f.Name)
			}
		}
		var subs []string
		for _, c := range n.Children {
			if c.Type == kong.CommandNode && !c.Hidden {
				subs = append(subs, c.Name)
				walk(c, strings.TrimSpace(path+" "+c.Name), flags)
			}
		}
		sort.Strings(flags)
		words[path] = append(subs, flags...)
	}
	walk(app.Node, "", []string{"--help"})
	paths := make([]string, 0, len(words))
	for p := range words {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	b := &strings.Builder{}
	b.WriteString(`# bash completion for pbxbridge (generated by "pbxbridge completion bash")
_pbxbridge() {
	local cur path word i
	cur=${COMP_WORDS[COMP_CWORD]}
	path=
	for ((i = 1; i < COMP_CWORD; i++)); do
		word=${COMP_WORDS[i]}
		[[ $word == -* ]] && continue
		case "$path${path:+ }$word" in
`)
	for _, p := range paths {
		if p != "" {
			fmt.Fprintf(b, "\t\t%q) path=%q ;;\n", p, p)
		}
	}
	b.WriteString("\t\tesac\n\tdone\n\tlocal words\n\tcase \"$path\" in\n")
	for _, p := range paths {
		fmt.Fprintf(b, "\t%q) words=%q ;;\n", p, strings.Join(words[p], " "))
	}
	b.WriteString(`	esac
	case "$cur" in
	--config=* | --socket=*) COMPREPLY=($(compgen -f -- "${cur#*=}")) ;;
	*) COMPREPLY=($(compgen -W "$words" -- "$cur")) ;;
	esac
}
complete -o default -F _pbxbridge pbxbridge
`)
	_, err := io.WriteString(w, b.String())
	return err
}
