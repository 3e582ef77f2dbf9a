package main

// The documentation check, run by `go test ./...` and so by CI. Over every Markdown file of the
// repository (hidden directories, dist/ and node_modules/ excepted):
//
//   - every relative link and image resolves: the file or directory exists inside the
//     repository, and an #anchor names a heading of the target page by GitHub's anchor rules
//     (or an explicit <a name|id>), or a line (#L12) of another file;
//   - every repository path a page cites in prose or in a code span (`docs/security.md`,
//     connector/cli) exists;
//   - every command of a ```sh (bash, shell, console) block that starts with pbxbridge is one
//     the real command line accepts: connector/cli.MainIO with the command's words and --help
//     exits 0; and it holds no placeholder (<name>, FILE, …): the docs' commands are real;
//   - no pbxbridge command sits in an indented or unlabelled code block, where nothing checks it;
//   - every URL of an admin-listener route on loopback (/v1/…, /metrics, /healthz, /readyz,
//     /calls) uses the admin listener's default port (127.0.0.1:9180);
//   - each translated page (README.ru.md, docs/ru/NAME.md) and its English original (README.md,
//     docs/NAME.md) link to each other in their first lines, have as many sections (## and ###)
//     and show the same pbxbridge commands; README.ru.md links to every page of docs/ru.

import (
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pbxbridge/pbxbridge/connector/cli"
	"github.com/pbxbridge/pbxbridge/connector/config"
)

// docs is the repository's Markdown, parsed: pages by slash path relative to the root.
type docs struct {
	root  string
	pages map[string]*mdPage
	order []string
}

// loadDocs parses every Markdown file of the repository.
func loadDocs(t *testing.T) *docs {
	t.Helper()
	root := repoRoot(t)
	d := &docs{root: root, pages: map[string]*mdPage{}}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := e.Name()
		if e.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || name == "dist" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".md") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		d.pages[rel] = parsePage(src)
		d.order = append(d.order, rel)
		return nil
	})
	if err != nil {
		t.Fatalf("reading the docs: %v", err)
	}
	sort.Strings(d.order)
	if len(d.order) < 10 {
		t.Fatalf("found only %d Markdown files under %s", len(d.order), root)
	}
	return d
}

// repoRoot is the directory of go.mod above the test's working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// exists reports whether a slash path relative to the root exists, and whether it is a dir.
func (d *docs) exists(rel string) (ok, dir bool) {
	fi, err := os.Stat(filepath.Join(d.root, filepath.FromSlash(rel)))
	if err != nil {
		return false, false
	}
	return true, fi.IsDir()
}

var (
	urlScheme  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
	lineAnchor = regexp.MustCompile(`^L\d+(C\d+)?(-L\d+(C\d+)?)?$`)
)

// resolveLink checks one link of page rel; it returns what is wrong, or "".
func (d *docs) resolveLink(rel, dest string) string {
	if dest == "" {
		return "empty link"
	}
	if urlScheme.MatchString(dest) || strings.HasPrefix(dest, "//") {
		return ""
	}
	rawPath, rawFrag, _ := strings.Cut(dest, "#")
	p, err := url.PathUnescape(rawPath)
	if err != nil {
		return fmt.Sprintf("bad escape in %q", dest)
	}
	frag, err := url.PathUnescape(rawFrag)
	if err != nil {
		return fmt.Sprintf("bad escape in %q", dest)
	}
	target := rel
	switch {
	case p == "":
	case strings.HasPrefix(p, "/"):
		target = path.Clean(strings.TrimPrefix(p, "/"))
	default:
		target = path.Join(path.Dir(rel), p)
	}
	if target == ".." || strings.HasPrefix(target, "../") {
		return fmt.Sprintf("%q points outside the repository", dest)
	}
	ok, dir := d.exists(target)
	if !ok {
		return fmt.Sprintf("%q: no such file or directory (%s)", dest, target)
	}
	if frag == "" {
		return ""
	}
	switch {
	case dir:
		return fmt.Sprintf("%q: an anchor on a directory", dest)
	case strings.HasSuffix(target, ".md"):
		page := d.pages[target]
		if page == nil {
			src, err := os.ReadFile(filepath.Join(d.root, filepath.FromSlash(target)))
			if err != nil {
				return err.Error()
			}
			page = parsePage(src)
		}
		if !page.anchors[frag] {
			return fmt.Sprintf("%q: %s has no heading with the anchor #%s%s", dest, target, frag, page.nearAnchors(frag))
		}
	case !lineAnchor.MatchString(frag):
		return fmt.Sprintf("%q: #%s is not a line anchor (#L12) and %s is not Markdown", dest, frag, target)
	}
	return ""
}

// nearAnchors suggests the page's anchors that share a word with a missing one.
func (p *mdPage) nearAnchors(frag string) string {
	var near []string
	for _, h := range p.headings {
		for _, w := range strings.Split(frag, "-") {
			if len([]rune(w)) > 3 && strings.Contains(h.anchor, w) {
				near = append(near, "#"+h.anchor)
				break
			}
		}
	}
	if len(near) == 0 {
		return ""
	}
	return " (did you mean " + strings.Join(near, ", ") + "?)"
}

func TestDocsLinksResolve(t *testing.T) {
	t.Parallel()
	d := loadDocs(t)
	links := 0
	for _, rel := range d.order {
		for _, l := range d.pages[rel].links {
			links++
			if msg := d.resolveLink(rel, l.dest); msg != "" {
				t.Errorf("%s:%d: broken link: %s", rel, l.line, msg)
			}
		}
	}
	t.Logf("%d links in %d Markdown files", links, len(d.order))
}

func TestDocsCitedPathsExist(t *testing.T) {
	t.Parallel()
	d := loadDocs(t)
	for _, rel := range d.order {
		for _, c := range d.pages[rel].cited {
			if ok, _ := d.exists(c.dest); ok {
				continue
			}
			// A Go identifier after a package path (connector/cli.MainIO) names the package.
			if i := strings.LastIndex(c.dest, "."); i > strings.LastIndex(c.dest, "/") {
				if ok, dir := d.exists(c.dest[:i]); ok && dir {
					continue
				}
			}
			t.Errorf("%s:%d: cites %s, which is not in the repository", rel, c.line, c.dest)
		}
	}
}

// shellLangs are the code block languages whose lines are shell commands; in console blocks
// only the lines after a "$ " or "# " prompt are.
var shellLangs = map[string]bool{"sh": true, "bash": true, "shell": true, "console": true, "shell-session": true}

var (
	heredoc = regexp.MustCompile(`<<(-?)\s*(['"]?)([A-Za-z_][A-Za-z0-9_]*)(['"]?)`)
	// placeholderWord is a word that stands for a value the reader fills in.
	placeholderWord  = regexp.MustCompile(`^[A-Z][A-Z0-9_-]*[A-Z0-9]$|…|\.\.\.`)
	placeholderAngle = regexp.MustCompile(`(^|[^<])<[A-Za-z][^<>\s]*>`)
)

// docCommand is a pbxbridge command of a shell block.
type docCommand struct {
	line  int
	words []string // pbxbridge's arguments (without "pbxbridge")
	text  string   // the logical line it came from
}

// shellBlockCommands returns the pbxbridge commands of a shell code block, and what is wrong
// with the block's lines.
func shellBlockCommands(c mdCode) ([]docCommand, []string) {
	var (
		cmds     []docCommand
		problems []string
	)
	console := c.lang == "console" || c.lang == "shell-session"
	for i := 0; i < len(c.lines); i++ {
		lineNo := c.line + i
		l := c.lines[i]
		if console {
			t := strings.TrimLeft(l, " ")
			switch {
			case strings.HasPrefix(t, "$ "), strings.HasPrefix(t, "# "):
				l = t[2:]
			default:
				continue // output
			}
		}
		for strings.HasSuffix(l, `\`) && i+1 < len(c.lines) {
			i++
			l = strings.TrimSuffix(l, `\`) + " " + strings.TrimPrefix(strings.TrimLeft(c.lines[i], " "), "> ")
		}
		if m := heredoc.FindStringSubmatch(l); m != nil {
			term := m[3]
			for i+1 < len(c.lines) {
				i++
				body := c.lines[i]
				if m[1] == "-" {
					body = strings.TrimLeft(body, "\t")
				}
				if body == term {
					break
				}
			}
		}
		sc, err := shellCommands(l)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%d: %v in %q", lineNo, err, l))
			continue
		}
		for _, s := range sc {
			w := commandWords(s.words)
			if len(w) == 0 || (w[0] != "pbxbridge" && !strings.HasSuffix(w[0], "/pbxbridge")) {
				continue
			}
			if m := placeholderAngle.FindString(l); m != "" {
				problems = append(problems, fmt.Sprintf("%d: placeholder %q in %q: write a real value", lineNo, strings.TrimLeft(m, " "), l))
				continue
			}
			for _, a := range w[1:] {
				_, v, isFlag := strings.Cut(a, "=")
				if !isFlag || !strings.HasPrefix(a, "-") {
					v = a
				}
				if placeholderWord.MatchString(v) {
					problems = append(problems, fmt.Sprintf("%d: placeholder %q in %q: write a real value", lineNo, v, l))
				}
			}
			cmds = append(cmds, docCommand{line: lineNo, words: w[1:], text: l})
		}
	}
	return cmds, problems
}

// commandWords drops what runs a command rather than being it: sudo and its options,
// leading variable assignments, env, exec, time.
func commandWords(w []string) []string {
	for len(w) > 0 {
		switch {
		case w[0] == "sudo":
			w = w[1:]
			for len(w) > 0 && strings.HasPrefix(w[0], "-") {
				if (w[0] == "-u" || w[0] == "-g") && len(w) > 1 {
					w = w[1:]
				}
				w = w[1:]
			}
		case w[0] == "env" || w[0] == "exec" || w[0] == "time":
			w = w[1:]
		case strings.Contains(w[0], "=") && !strings.HasPrefix(w[0], "-") && !strings.HasPrefix(w[0], "="):
			w = w[1:]
		default:
			return w
		}
	}
	return w
}

// pageCommands are the pbxbridge commands of a page's shell blocks.
func pageCommands(p *mdPage) ([]docCommand, []string) {
	var (
		cmds     []docCommand
		problems []string
	)
	for _, c := range p.code {
		if !shellLangs[c.lang] {
			continue
		}
		cs, ps := shellBlockCommands(c)
		cmds = append(cmds, cs...)
		problems = append(problems, ps...)
	}
	return cmds, problems
}

func TestDocsCommandsParse(t *testing.T) {
	t.Parallel()
	d := loadDocs(t)
	n := 0
	for _, rel := range d.order {
		cmds, problems := pageCommands(d.pages[rel])
		for _, p := range problems {
			t.Errorf("%s:%s", rel, p)
		}
		for _, c := range cmds {
			n++
			var stdout, stderr bytes.Buffer
			args := append(slices.Clone(c.words), "--help")
			if code := cli.MainIO(t.Context(), "docs-test", args, &stdout, &stderr); code != 0 {
				t.Errorf("%s:%d: `pbxbridge %s` is not a command pbxbridge accepts (exit %d with --help): %s",
					rel, c.line, strings.Join(c.words, " "), code, strings.TrimSpace(stderr.String()))
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d pbxbridge commands in the docs' shell blocks: is the check reading them?", n)
	}
	t.Logf("%d pbxbridge commands checked", n)
}

func TestDocsNoCommandsOutsideShellBlocks(t *testing.T) {
	t.Parallel()
	d := loadDocs(t)
	for _, rel := range d.order {
		for _, c := range d.pages[rel].code {
			if c.lang != "" && c.lang != "text" && c.lang != "txt" {
				continue
			}
			for i, l := range c.lines {
				w := strings.Fields(strings.TrimPrefix(strings.TrimLeft(l, " "), "$ "))
				w = commandWords(w)
				if len(w) > 1 && w[0] == "pbxbridge" {
					kind := "an indented code block"
					if c.fenced {
						kind = "a code block without a language"
					}
					t.Errorf("%s:%d: `%s` is in %s: put pbxbridge commands in a ```sh block (```console with $ prompts for a transcript), where the docs check runs them",
						rel, c.line+i, strings.TrimSpace(l), kind)
				}
			}
		}
	}
}

// translations pairs each translated page with its English original: README.ru.md with
// README.md, docs/ru/NAME.md with docs/NAME.md (any directory).
func (d *docs) translations() map[string]string {
	out := map[string]string{}
	for _, rel := range d.order {
		dir, name := path.Split(rel)
		switch {
		case strings.HasSuffix(name, ".ru.md"):
			out[rel] = dir + strings.TrimSuffix(name, ".ru.md") + ".md"
		case path.Base(dir) == "ru":
			out[rel] = path.Join(path.Dir(strings.TrimSuffix(dir, "/")), name)
		}
	}
	return out
}

// topLines is how far into a page the link to its other language must be.
const topLines = 5

// linksTo reports whether page rel links to target within its first lines.
func (d *docs) linksTo(rel, target string, within int) bool {
	for _, l := range d.pages[rel].links {
		if within > 0 && l.line > within {
			continue
		}
		if urlScheme.MatchString(l.dest) {
			continue
		}
		p, _, _ := strings.Cut(l.dest, "#")
		p, err := url.PathUnescape(p)
		if err != nil || p == "" {
			continue
		}
		if path.Join(path.Dir(rel), p) == target {
			return true
		}
	}
	return false
}

func headingCounts(p *mdPage) [7]int {
	var n [7]int
	for _, h := range p.headings {
		n[h.level]++
	}
	return n
}

func commandSet(p *mdPage) []string {
	cmds, _ := pageCommands(p)
	out := make([]string, 0, len(cmds))
	for _, c := range cmds {
		out = append(out, strings.Join(c.words, " "))
	}
	sort.Strings(out)
	return out
}

func TestDocsTranslationsInStep(t *testing.T) {
	t.Parallel()
	d := loadDocs(t)
	pairs := d.translations()
	if len(pairs) == 0 {
		t.Fatal("no translated pages (README.ru.md, docs/ru/*.md)")
	}
	for _, ru := range slices.Sorted(func(yield func(string) bool) {
		for k := range pairs {
			if !yield(k) {
				return
			}
		}
	}) {
		en := pairs[ru]
		if d.pages[en] == nil {
			t.Errorf("%s: no English original %s", ru, en)
			continue
		}
		if !d.linksTo(ru, en, topLines) {
			t.Errorf("%s: link to the English page %s in its first %d lines", ru, en, topLines)
		}
		if !d.linksTo(en, ru, topLines) {
			t.Errorf("%s: link to the Russian page %s in its first %d lines", en, ru, topLines)
		}
		if cr, ce := headingCounts(d.pages[ru]), headingCounts(d.pages[en]); cr[2] != ce[2] || cr[3] != ce[3] {
			t.Errorf("%s has %d sections (##) and %d subsections (###), %s %d and %d: keep the two languages in step",
				ru, cr[2], cr[3], en, ce[2], ce[3])
		}
		if cr, ce := commandSet(d.pages[ru]), commandSet(d.pages[en]); !slices.Equal(cr, ce) {
			t.Errorf("%s and %s show different pbxbridge commands: only in the Russian page %q; only in the English page %q",
				ru, en, minus(cr, ce), minus(ce, cr))
		}
	}
	const index = "README.ru.md"
	if d.pages[index] != nil {
		for ru := range pairs {
			if strings.Contains(ru, "/ru/") && !d.linksTo(index, ru, 0) {
				t.Errorf("%s does not link to %s", index, ru)
			}
		}
	}
}

// minus is a without the elements of b (as multisets).
func minus(a, b []string) []string {
	left := map[string]int{}
	for _, s := range b {
		left[s]++
	}
	var out []string
	for _, s := range a {
		if left[s] > 0 {
			left[s]--
			continue
		}
		out = append(out, s)
	}
	return out
}

// adminURL is a URL of the admin listener's routes on loopback, in prose or code.
var adminURL = regexp.MustCompile(`(?:127\.0\.0\.1|localhost):(\d+)/(?:v1/|metrics|healthz|readyz|calls)`)

func TestDocsAdminListenerPort(t *testing.T) {
	t.Parallel()
	d := loadDocs(t)
	_, port, err := net.SplitHostPort(config.Defaults(nil).HTTP.Admin.Listen)
	if err != nil {
		t.Fatalf("the admin listener's default: %v", err)
	}
	for _, rel := range d.order {
		src, err := os.ReadFile(filepath.Join(d.root, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(src), "\n") {
			for _, m := range adminURL.FindAllStringSubmatch(line, -1) {
				if m[1] != port {
					t.Errorf("%s:%d: %s: the admin listener is 127.0.0.1:%s (http.admin.listen's default)", rel, i+1, m[0], port)
				}
			}
		}
	}
}
