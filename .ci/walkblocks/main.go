// Command walkblocks extracts the shell blocks of a step-by-step guide for .ci/walkthrough: every
// ```sh block of one ## section of a Markdown page, in order, each written to its own file, and a
// manifest on stdout, one line per block: "FILE STEP BLOCK LINE" (the step is the number N of the
// enclosing "### N." heading, BLOCK counts the step's blocks from 1, LINE is the block's first
// command line in the page). Every block of the section must sit under a numbered step heading.
//
//	go run ./.ci/walkblocks -section 'От пакета до звонка в Битрикс24' -out DIR README.ru.md
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "walkblocks:", err)
		os.Exit(1)
	}
}

// block is one ```sh block of the guide.
type block struct {
	step, n, line int
	text          []string
}

var stepHeading = regexp.MustCompile(`^### (\d+)\. `)

func run() error {
	section := flag.String("section", "", "title of the ## section holding the steps")
	out := flag.String("out", "", "directory to write the blocks to")
	flag.Parse()
	if *section == "" || *out == "" || flag.NArg() != 1 {
		return errors.New("usage: walkblocks -section TITLE -out DIR PAGE.md")
	}
	page := flag.Arg(0)
	blocks, err := extract(page, *section)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o750); err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	for i, b := range blocks {
		name := filepath.Join(*out, fmt.Sprintf("%02d-step%d-%d.sh", i+1, b.step, b.n))
		text := fmt.Sprintf("# %s:%d (step %d, block %d)\n%s\n", page, b.line, b.step, b.n, strings.Join(b.text, "\n"))
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s %d %d %d\n", name, b.step, b.n, b.line)
	}
	return w.Flush()
}

// extract returns the ```sh blocks of the section titled title.
func extract(page, title string) ([]block, error) {
	src, err := os.ReadFile(page)
	if err != nil {
		return nil, err
	}
	var (
		blocks           []block
		in, found        bool
		step             = -1
		perStep          = map[int]int{}
		cur              *block
		lines            = strings.Split(string(src), "\n")
		fenceOpen, shell bool
	)
	for i, l := range lines {
		no := i + 1
		if fenceOpen {
			if strings.TrimSpace(l) == "```" {
				fenceOpen = false
				if cur != nil {
					blocks = append(blocks, *cur)
					cur = nil
				}
				continue
			}
			if cur != nil {
				cur.text = append(cur.text, l)
			}
			continue
		}
		if lang, ok := strings.CutPrefix(l, "```"); ok {
			fenceOpen = true
			lang = strings.TrimSpace(lang)
			shell = lang == "sh" || lang == "bash" || lang == "shell"
			if in && shell {
				if step < 0 {
					return nil, fmt.Errorf("%s:%d: a shell block before the first numbered step (### N.)", page, no)
				}
				perStep[step]++
				cur = &block{step: step, n: perStep[step], line: no + 1}
			}
			continue
		}
		switch {
		case strings.HasPrefix(l, "## "):
			in = strings.TrimSpace(strings.TrimPrefix(l, "## ")) == title
			found = found || in
			step = -1
		case in && strings.HasPrefix(l, "### "):
			m := stepHeading.FindStringSubmatch(l)
			if m == nil {
				return nil, fmt.Errorf("%s:%d: %q is not a numbered step (### N. …)", page, no, l)
			}
			step, _ = strconv.Atoi(m[1])
		}
	}
	switch {
	case fenceOpen:
		return nil, fmt.Errorf("%s: a code block is not closed", page)
	case !found:
		return nil, fmt.Errorf("%s: no section %q", page, "## "+title)
	case len(blocks) == 0:
		return nil, fmt.Errorf("%s: section %q has no shell blocks", page, title)
	}
	return blocks, nil
}
