package main

// The Markdown side of the documentation check (docs_test.go): a page parsed with goldmark
// (CommonMark plus GFM tables, as GitHub renders it) into what the check needs: its links with
// their lines, the anchors of its headings (GitHub's rules), the repository paths it cites in
// prose and code spans, and its code blocks; and the shell words of a command line.

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	extast "github.com/yuin/goldmark/extension/ast"
	"github.com/yuin/goldmark/text"
)

// mdLink is a link or image destination of a page.
type mdLink struct {
	dest string
	line int
}

// mdCode is a code block: fenced (with its info string's first word) or indented.
type mdCode struct {
	lang   string // "" for an indented block or a fence without info
	fenced bool
	line   int      // line of the first content line
	lines  []string // the content, without trailing newlines
}

// mdHeading is a heading with its level and GitHub anchor.
type mdHeading struct {
	level  int
	text   string
	anchor string
	line   int
}

// mdPage is what the check reads from one Markdown file.
type mdPage struct {
	headings []mdHeading
	anchors  map[string]bool // heading anchors and explicit <a name|id="…">
	links    []mdLink
	cited    []mdLink // repository paths named in prose or code spans (dest = the path)
	code     []mdCode
}

var markdown = goldmark.New(goldmark.WithExtensions(extension.Table, extension.Strikethrough))

// htmlAnchor finds explicit anchors and links in raw HTML.
var (
	htmlAnchor = regexp.MustCompile(`(?i)<a\s[^>]*\b(?:name|id)\s*=\s*"([^"]+)"`)
	htmlLink   = regexp.MustCompile(`(?i)<(?:a|img)\s[^>]*\b(?:href|src)\s*=\s*"([^"]+)"`)
)

// repoPathPrefixes are the top-level directories whose paths, cited in prose or a code span,
// must exist (relative to the repository root).
const repoPathDirs = `docs|crm|connector|asterisk|cmd|configs|licensing|systemd|\.ci`

var (
	// citedInText finds a repository path in prose: it starts a word (after a space, an opening
	// bracket or a quote, never after / or >, which would make it part of a URL).
	citedInText = regexp.MustCompile(`(?:^|[\s(\["'])((?:` + repoPathDirs + `)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])`)
	// citedInCode is a whole code span that is a repository path (optionally :line or #anchor).
	citedInCode = regexp.MustCompile(`^(?:\./)?((?:` + repoPathDirs + `)/[A-Za-z0-9_./-]*)(?:[:#].*)?$`)
)

// parsePage parses one Markdown file.
func parsePage(src []byte) *mdPage {
	p := &mdPage{anchors: map[string]bool{}}
	doc := markdown.Parser().Parse(text.NewReader(src))
	lineAt := func(off int) int { return bytes.Count(src[:off], []byte("\n")) + 1 }
	seen := map[string]int{}
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.Heading:
			t := strings.TrimSpace(inlineText(n, src))
			base := githubSlug(t)
			a := base
			if k := seen[base]; k > 0 {
				a = fmt.Sprintf("%s-%d", base, k)
			}
			seen[base]++
			p.anchors[a] = true
			p.headings = append(p.headings, mdHeading{level: n.Level, text: t, anchor: a, line: lineOfNode(n, src, lineAt)})
			p.citedIn(proseText(n, src), lineOfNode(n, src, lineAt))
		case *ast.Link:
			p.links = append(p.links, mdLink{dest: string(n.Destination), line: lineOfNode(n, src, lineAt)})
		case *ast.Image:
			p.links = append(p.links, mdLink{dest: string(n.Destination), line: lineOfNode(n, src, lineAt)})
		case *ast.FencedCodeBlock:
			c := mdCode{fenced: true, line: lineOfNode(n, src, lineAt), lines: blockLines(n, src)}
			if n.Info != nil {
				c.lang = strings.ToLower(string(n.Language(src)))
			}
			if n.Lines().Len() == 0 && n.Info != nil {
				c.line = lineAt(n.Info.Segment.Start) + 1
			}
			p.code = append(p.code, c)
			return ast.WalkSkipChildren, nil
		case *ast.CodeBlock:
			p.code = append(p.code, mdCode{line: lineOfNode(n, src, lineAt), lines: blockLines(n, src)})
			return ast.WalkSkipChildren, nil
		case *ast.HTMLBlock:
			p.html(strings.Join(blockLines(n, src), "\n"), lineOfNode(n, src, lineAt))
		case *ast.RawHTML:
			var b strings.Builder
			for i := 0; i < n.Segments.Len(); i++ {
				s := n.Segments.At(i)
				b.Write(s.Value(src))
			}
			line := 0
			if n.Segments.Len() > 0 {
				line = lineAt(n.Segments.At(0).Start)
			}
			p.html(b.String(), line)
		case *ast.CodeSpan:
			t := inlineText(n, src)
			if m := citedInCode.FindStringSubmatch(t); m != nil && !strings.ContainsAny(t, "<>{}*…$ ") {
				p.cited = append(p.cited, mdLink{dest: strings.TrimSuffix(m[1], "/"), line: lineOfNode(n, src, lineAt)})
			}
			return ast.WalkSkipChildren, nil
		case *ast.Paragraph, *ast.TextBlock, *extast.TableCell:
			p.citedIn(proseText(n, src), lineOfNode(n, src, lineAt))
		}
		return ast.WalkContinue, nil
	})
	return p
}

// html records the explicit anchors and the links of a piece of raw HTML.
func (p *mdPage) html(s string, line int) {
	for _, m := range htmlAnchor.FindAllStringSubmatch(s, -1) {
		p.anchors[m[1]] = true
	}
	for _, m := range htmlLink.FindAllStringSubmatch(s, -1) {
		p.links = append(p.links, mdLink{dest: m[1], line: line})
	}
}

// citedIn records the repository paths named in a block's prose.
func (p *mdPage) citedIn(prose string, line int) {
	for _, m := range citedInText.FindAllStringSubmatch(prose, -1) {
		p.cited = append(p.cited, mdLink{dest: strings.TrimRight(m[1], "./"), line: line})
	}
}

// proseText is a block's own inline text with code spans blanked out (they are checked as a
// whole) and nested blocks left to themselves.
func proseText(n ast.Node, src []byte) string {
	var b strings.Builder
	for c := n.FirstChild(); c != nil; c = c.NextSibling() {
		switch c := c.(type) {
		case *ast.Text:
			b.Write(c.Value(src))
			if c.SoftLineBreak() || c.HardLineBreak() {
				b.WriteByte(' ')
			}
		case *ast.String:
			b.Write(c.Value)
		case *ast.CodeSpan, *ast.RawHTML, *ast.AutoLink:
			b.WriteByte(' ')
		default:
			if c.Type() == ast.TypeInline {
				b.WriteString(proseText(c, src))
			}
		}
	}
	return b.String()
}

// blockLines is the content of a block node, line by line.
func blockLines(n ast.Node, src []byte) []string {
	var out []string
	l := n.Lines()
	for i := 0; i < l.Len(); i++ {
		s := l.At(i)
		out = append(out, strings.TrimRight(string(s.Value(src)), "\r\n"))
	}
	return out
}

// lineOfNode is the source line of a node: its first line, or the first text below it, or
// the nearest enclosing block's.
func lineOfNode(n ast.Node, src []byte, lineAt func(int) int) int {
	if n.Type() == ast.TypeBlock && n.Lines().Len() > 0 {
		return lineAt(n.Lines().At(0).Start)
	}
	line := 0
	_ = ast.Walk(n, func(c ast.Node, entering bool) (ast.WalkStatus, error) {
		if t, ok := c.(*ast.Text); ok && entering {
			line = lineAt(t.Segment.Start)
			return ast.WalkStop, nil
		}
		return ast.WalkContinue, nil
	})
	if line > 0 {
		return line
	}
	for p := n.Parent(); p != nil; p = p.Parent() {
		if p.Type() == ast.TypeBlock && p.Lines().Len() > 0 {
			return lineAt(p.Lines().At(0).Start)
		}
	}
	return 0
}

// inlineText is the text a reader sees of a node's inline content: emphasis and link markup
// gone, code spans' content kept, raw HTML dropped.
func inlineText(n ast.Node, src []byte) string {
	var b strings.Builder
	for c := n.FirstChild(); c != nil; c = c.NextSibling() {
		switch c := c.(type) {
		case *ast.Text:
			b.Write(c.Value(src))
			if c.SoftLineBreak() || c.HardLineBreak() {
				b.WriteByte(' ')
			}
		case *ast.String:
			b.Write(c.Value)
		case *ast.RawHTML:
		case *ast.AutoLink:
			b.Write(c.Label(src))
		default:
			b.WriteString(inlineText(c, src))
		}
	}
	return b.String()
}

// githubSlug is the anchor GitHub gives a heading with this text (github-slugger): lower case,
// every character but letters, digits, marks, connector punctuation (_), hyphens and spaces
// removed, each space a hyphen. Duplicates get -1, -2… (parsePage).
func githubSlug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsNumber(r) ||
			unicode.IsMark(r) || unicode.Is(unicode.Pc, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// shellCommand is one simple command of a shell line: its words, without redirections.
type shellCommand struct {
	words []string
}

// shellCommands splits a logical shell line (continuations already joined) into its simple
// commands (separated by ;, &, &&, || and |), as a POSIX shell would split words: quotes and
// backslashes are honoured, a # starting a word begins a comment, redirections (>, >>, <, 2>,
// 2>&1, &>) and their targets are left out. Command substitutions stay one word. It reports an
// unterminated quote.
func shellCommands(line string) ([]shellCommand, error) {
	var (
		out      []shellCommand
		cur      shellCommand
		word     strings.Builder
		inWord   bool
		redirect bool // the next word is a redirection's target
	)
	endWord := func() {
		if !inWord {
			return
		}
		if redirect {
			redirect = false
		} else {
			cur.words = append(cur.words, word.String())
		}
		word.Reset()
		inWord = false
	}
	endCommand := func() {
		endWord()
		if len(cur.words) > 0 {
			out = append(out, cur)
		}
		cur = shellCommand{}
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '\\':
			inWord = true
			if i+1 < len(rs) {
				i++
				word.WriteRune(rs[i])
			}
		case r == '\'':
			inWord = true
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				j++
			}
			if j == len(rs) {
				return nil, fmt.Errorf("unterminated ' quote")
			}
			word.WriteString(string(rs[i+1 : j]))
			i = j
		case r == '"':
			inWord = true
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) && strings.ContainsRune("$`\"\\", rs[j+1]) {
					j++
				}
				word.WriteRune(rs[j])
			}
			if j == len(rs) {
				return nil, fmt.Errorf("unterminated \" quote")
			}
			i = j
		case r == '$' && i+1 < len(rs) && rs[i+1] == '(':
			// $( … ): one word up to the matching parenthesis.
			inWord = true
			depth := 0
			j := i + 1
			for ; j < len(rs); j++ {
				if rs[j] == '(' {
					depth++
				} else if rs[j] == ')' {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			if j == len(rs) {
				return nil, fmt.Errorf("unterminated $(")
			}
			word.WriteString(string(rs[i : j+1]))
			i = j
		case r == '#' && !inWord:
			endCommand()
			return out, nil
		case r == ' ' || r == '\t':
			endWord()
		case r == ';' || r == '|':
			endCommand()
			if i+1 < len(rs) && rs[i+1] == '|' {
				i++
			}
		case r == '&':
			if i+1 < len(rs) && rs[i+1] == '>' { // &> file
				endWord()
				i++
				redirect = true
				continue
			}
			endCommand()
			if i+1 < len(rs) && rs[i+1] == '&' {
				i++
			}
		case r == '>' || r == '<':
			// A word of digits just before is the descriptor (2>).
			if inWord && strings.Trim(word.String(), "0123456789") == "" {
				word.Reset()
				inWord = false
			}
			endWord()
			for i+1 < len(rs) && (rs[i+1] == '>' || rs[i+1] == '<') {
				i++
			}
			if i+1 < len(rs) && rs[i+1] == '&' { // >&2, 2>&1
				i++
				for i+1 < len(rs) && unicode.IsDigit(rs[i+1]) {
					i++
				}
				continue
			}
			redirect = true
		default:
			inWord = true
			word.WriteRune(r)
		}
	}
	endCommand()
	return out, nil
}

func TestGitHubSlug(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"Security", "security"},
		{"Erasing a number: `pbxbridge forget NUMBER`", "erasing-a-number-pbxbridge-forget-number"},
		{"2.1 heltonmarx/goami (MIT)", "21-heltonmarxgoami-mit"},
		{"amoCRM / Kommo", "amocrm--kommo"},
		{"Шаг 3. Локальное приложение", "шаг-3-локальное-приложение"},
		{"Что нужно — заранее", "что-нужно--заранее"},
		{"call_id_reuse_guard", "call_id_reuse_guard"},
		{"«Ёлка» № 5", "ёлка--5"},
	} {
		src := []byte("# " + c.in + "\n")
		p := parsePage(src)
		if len(p.headings) != 1 || p.headings[0].anchor != c.want {
			t.Errorf("heading %q: anchor %+v, want %q", c.in, p.headings, c.want)
		}
	}
	p := parsePage([]byte("# Foo\n\n## Foo\n\n### Foo\n"))
	if got := []string{p.headings[0].anchor, p.headings[1].anchor, p.headings[2].anchor}; !slices.Equal(got, []string{"foo", "foo-1", "foo-2"}) {
		t.Errorf("duplicate headings: anchors %v, want foo, foo-1, foo-2", got)
	}
}

func TestParsePage(t *testing.T) {
	t.Parallel()
	src := "# Title\n\n" +
		"See [the guide](docs/install.md#step-1), ![logo](img/logo.png) and <a href=\"x.md\">x</a>.\n" +
		"Prose cites docs/security.md, `connector/cli` and `crm/amocrm/widget/` but not /crm/b24/install.\n\n" +
		"<a name=\"manual\"></a>\n\n" +
		"| a | b |\n|---|---|\n| [t](t.md) | configs/pbxbridge.example.yaml |\n\n" +
		"```sh\npbxbridge status\n```\n\n" +
		"    pbxbridge doctor\n\n" +
		"[ref]: ref.md\n\nA [reference][ref].\n"
	p := parsePage([]byte(src))
	var links, cited []string
	for _, l := range p.links {
		links = append(links, fmt.Sprintf("%s@%d", l.dest, l.line))
	}
	for _, c := range p.cited {
		cited = append(cited, c.dest)
	}
	sort.Strings(links)
	sort.Strings(cited)
	if want := []string{"docs/install.md#step-1@3", "img/logo.png@3", "ref.md@20", "t.md@10", "x.md@3"}; !slices.Equal(links, want) {
		t.Errorf("links %v, want %v", links, want)
	}
	if want := []string{"configs/pbxbridge.example.yaml", "connector/cli", "crm/amocrm/widget", "docs/security.md"}; !slices.Equal(cited, want) {
		t.Errorf("cited %v, want %v", cited, want)
	}
	if !p.anchors["title"] || !p.anchors["manual"] {
		t.Errorf("anchors %v, want title and manual", p.anchors)
	}
	if len(p.code) != 2 || p.code[0].lang != "sh" || !p.code[0].fenced || p.code[0].line != 13 ||
		p.code[1].lang != "" || p.code[1].fenced || p.code[1].lines[0] != "pbxbridge doctor" {
		t.Errorf("code blocks %+v", p.code)
	}
}

func TestShellCommands(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		line string
		want [][]string
	}{
		{"pbxbridge license request --connector b24 > /root/b24-request.txt", [][]string{{"pbxbridge", "license", "request", "--connector", "b24"}}},
		{"pbxbridge config check && systemctl restart pbxbridge && pbxbridge doctor",
			[][]string{{"pbxbridge", "config", "check"}, {"systemctl", "restart", "pbxbridge"}, {"pbxbridge", "doctor"}}},
		{"sudo -u pbxbridge pbxbridge status --json 2>/dev/null | jq .", [][]string{{"pbxbridge", "status", "--json"}, {"jq", "."}}},
		{`pbxbridge calls show "$(pbxbridge calls list | awk 'NR==3 {print $1}')"`,
			[][]string{{"pbxbridge", "calls", "show", "$(pbxbridge calls list | awk 'NR==3 {print $1}')"}}},
		{"echo 'a # b' \"c\\\"d\" e\\ f # a comment", [][]string{{"echo", "a # b", `c"d`, "e f"}}},
		{"PBXBRIDGE_CONFIG=/tmp/x.yaml pbxbridge doctor 2>&1 >/tmp/out; true", [][]string{{"pbxbridge", "doctor"}, {"true"}}},
		{"cat > /etc/pbxbridge/pbxbridge.yaml <<'EOF'", [][]string{{"cat"}}},
		{"curl -s &>/dev/null x || echo failed", [][]string{{"curl", "-s", "x"}, {"echo", "failed"}}},
	} {
		cmds, err := shellCommands(c.line)
		if err != nil {
			t.Errorf("%q: %v", c.line, err)
			continue
		}
		var got [][]string
		for _, s := range cmds {
			got = append(got, commandWords(s.words))
		}
		if !slices.EqualFunc(got, c.want, slices.Equal) {
			t.Errorf("%q: commands %q, want %q", c.line, got, c.want)
		}
	}
	for _, bad := range []string{`echo 'open`, `echo "open`, `echo $(open`} {
		if _, err := shellCommands(bad); err == nil {
			t.Errorf("%q: no error for an unterminated quote", bad)
		}
	}
}

func TestShellBlockCommands(t *testing.T) {
	t.Parallel()
	block := mdCode{lang: "sh", fenced: true, line: 10, lines: []string{
		"pbxbridge crm test b24",
		"cat >> /etc/default/pbxbridge <<EOF",
		"pbxbridge this is a heredoc's body, not a command",
		"EOF",
		"pbxbridge outbox redeliver --connector b24 \\",
		"  --since 2026-11-01",
		"pbxbridge crm test <name>",
		"pbxbridge restore FILE",
		"pbxbridge license verify b24.lic --at=YYYY-MM-DD",
	}}
	cmds, problems := shellBlockCommands(block)
	var got []string
	for _, c := range cmds {
		got = append(got, fmt.Sprintf("%d:%s", c.line, strings.Join(c.words, " ")))
	}
	want := []string{"10:crm test b24", "14:outbox redeliver --connector b24 --since 2026-11-01", "17:restore FILE", "18:license verify b24.lic --at=YYYY-MM-DD"}
	if !slices.Equal(got, want) {
		t.Errorf("commands %q, want %q", got, want)
	}
	if len(problems) != 3 || !strings.Contains(problems[0], `"<name>"`) || !strings.Contains(problems[1], `"FILE"`) || !strings.Contains(problems[2], `"YYYY-MM-DD"`) {
		t.Errorf("problems %q, want <name>, FILE and YYYY-MM-DD", problems)
	}
	console := mdCode{lang: "console", fenced: true, line: 1, lines: []string{
		"$ pbxbridge config check --config bad.yaml",
		"pbxbridge: output, not a command",
		"# pbxbridge status",
	}}
	cmds, _ = shellBlockCommands(console)
	if len(cmds) != 2 || cmds[0].words[0] != "config" || cmds[1].words[0] != "status" {
		t.Errorf("console commands %+v", cmds)
	}
}

// FuzzMarkdown: parsing a page and splitting its shell lines never panics, and every anchor is
// already a slug (GitHub's rule is idempotent).
func FuzzMarkdown(f *testing.F) {
	f.Add("# Title\n\nSee [x](a.md#b) and `docs/x.md`.\n\n```sh\npbxbridge status | jq . # c\n```\n")
	f.Add("| a | b |\n|---|---|\n| <a name=\"n\"></a> | `x` |\n\n    pbxbridge doctor\n")
	f.Fuzz(func(t *testing.T, s string) {
		p := parsePage([]byte(s))
		for _, h := range p.headings {
			base := githubSlug(h.text)
			if githubSlug(base) != base {
				t.Errorf("slug of %q is %q, whose slug is %q", h.text, base, githubSlug(base))
			}
		}
		for _, c := range p.code {
			_, _ = shellBlockCommands(c)
		}
		_, _ = shellCommands(s)
	})
}
