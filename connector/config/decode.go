package config

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/pbxbridge/pbxbridge/configs"
)

// Problem is one configuration error: where it is and what is wrong.
type Problem struct {
	File string `json:"file,omitempty"` // config file path ("" for problems not tied to a file)
	Line int    `json:"line,omitempty"` // 1-based line in File, 0 when unknown (defaults, environment)
	Path string `json:"path,omitempty"` // field path, e.g. pbx[0].ami.host
	Msg  string `json:"message"`
	// Placeholder marks a value left as the sample config has it (a config not yet edited).
	Placeholder bool `json:"placeholder,omitempty"`
}

func (p *Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	} else if p.Line > 0 {
		b.WriteString("line " + strconv.Itoa(p.Line) + ": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found while loading a config. It is returned as one error whose
// message has one line per problem, in file order.
type Problems []*Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each problem.
func (ps Problems) Unwrap() []error {
	out := make([]error, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out
}

func (ps Problems) sorted() Problems {
	sort.SliceStable(ps, func(i, j int) bool {
		if (ps[i].Line == 0) != (ps[j].Line == 0) {
			return ps[i].Line != 0 // file problems first
		}
		return ps[i].Line < ps[j].Line
	})
	return ps
}

// decoder walks a YAML AST into Go values, reporting every unknown key and every bad value with
// its path and line instead of stopping at the first one (goccy's Strict mode stops at the first).
type decoder struct {
	problems Problems
	lines    map[string]int // field path -> line, for validation messages
	anchors  map[string]ast.Node
	// typeBlock is called for a mapping key that is not a field of a connector entry; it
	// decodes connector type blocks. Nil elsewhere.
}

func newDecoder() *decoder {
	return &decoder{lines: map[string]int{}, anchors: map[string]ast.Node{}}
}

func (d *decoder) addf(node ast.Node, path, format string, args ...any) {
	d.problems = append(d.problems, &Problem{Line: line(node), Path: path, Msg: fmt.Sprintf(format, args...)})
}

func line(n ast.Node) int {
	if n == nil || n.GetToken() == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

// lineOf returns the line of path, or of its nearest ancestor present in the file (a missing
// key is reported at the block that should hold it).
func (d *decoder) lineOf(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// resolve strips anchors, tags and comments and follows aliases.
func (d *decoder) resolve(n ast.Node) ast.Node {
	for i := 0; i < 32 && n != nil; i++ {
		switch v := n.(type) {
		case *ast.AnchorNode:
			if name := v.Name.GetToken().Value; name != "" {
				d.anchors[name] = v.Value
			}
			n = v.Value
		case *ast.AliasNode:
			target, ok := d.anchors[v.Value.GetToken().Value]
			if !ok {
				return n
			}
			n = target
		case *ast.TagNode:
			n = v.Value
		case *ast.CommentGroupNode:
			return nil
		default:
			return n
		}
	}
	return n
}

// mappingPairs returns the key/value pairs of a mapping node.
func mappingPairs(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch v := n.(type) {
	case *ast.MappingNode:
		return v.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{v}, true
	}
	return nil, false
}

var (
	durationType      = reflect.TypeOf(time.Duration(0))
	textUnmarshaler   = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
	bytesUnmarshaler  = reflect.TypeOf((*yaml.BytesUnmarshaler)(nil)).Elem()
	secretType        = reflect.TypeOf(configs.Secret{})
	astNodeType       = reflect.TypeOf((*ast.Node)(nil)).Elem()
	nullNodeType      = reflect.TypeOf(&ast.NullNode{})
	sequenceNodeType  = reflect.TypeOf(&ast.SequenceNode{})
	mappingNodeType   = reflect.TypeOf(&ast.MappingNode{})
	mappingValueNodeT = reflect.TypeOf(&ast.MappingValueNode{})
)

// isLeaf reports whether values of t are decoded in one piece by goccy rather than walked.
func isLeaf(t reflect.Type) bool {
	if t == durationType || t == secretType {
		return true
	}
	if reflect.PointerTo(t).Implements(bytesUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return true
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Slice, reflect.Map, reflect.Pointer, reflect.Interface:
		return false
	}
	return true
}

// decode fills v (addressable) from node. path names v for messages.
func (d *decoder) decode(node ast.Node, v reflect.Value, path string) {
	node = d.resolve(node)
	if node == nil || reflect.TypeOf(node) == nullNodeType {
		return // keep the default
	}
	d.lines[path] = line(node)
	t := v.Type()
	if t == astNodeType {
		v.Set(reflect.ValueOf(node))
		return
	}
	if isLeaf(t) {
		d.decodeLeaf(node, v, path)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(node, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(node, v, path)
	case reflect.Slice:
		seq, ok := node.(*ast.SequenceNode)
		if !ok {
			d.addf(node, path, "must be a list, got %s", describe(node))
			return
		}
		s := reflect.MakeSlice(t, len(seq.Values), len(seq.Values))
		for i, item := range seq.Values {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		pairs, ok := mappingPairs(node)
		if !ok {
			d.addf(node, path, "must be a mapping, got %s", describe(node))
			return
		}
		if t.Key().Kind() != reflect.String {
			d.addf(node, path, "unsupported map key type %s", t.Key())
			return
		}
		m := reflect.MakeMapWithSize(t, len(pairs))
		for _, p := range pairs {
			k := keyString(p)
			elem := reflect.New(t.Elem()).Elem()
			d.decode(p.Value, elem, joinPath(path, k))
			m.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), elem)
		}
		v.Set(m)
	default:
		d.addf(node, path, "unsupported type %s", t)
	}
}

func (d *decoder) decodeLeaf(node ast.Node, v reflect.Value, path string) {
	switch reflect.TypeOf(node) {
	case sequenceNodeType, mappingNodeType, mappingValueNodeT:
		if !reflect.PointerTo(v.Type()).Implements(bytesUnmarshaler) { // such a type reads any YAML
			d.addf(node, path, "must be a single value, got %s", describe(node))
			return
		}
	}
	ptr := reflect.New(v.Type())
	if err := yaml.NodeToValue(node, ptr.Interface()); err != nil {
		d.addf(node, path, "invalid value %q: %s", node.String(), cleanYAMLError(err, v.Type()))
		return
	}
	v.Set(ptr.Elem())
}

// fieldIndex maps yaml key names to struct field indexes for t (embedded structs flattened
// with ",inline").
func fieldIndex(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
			for k, idx := range fieldIndex(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = []int{i}
	}
	return out
}

// extraKeys is implemented by struct types that accept keys besides their fields (a connector
// entry accepts its type block). It returns false when the key is not its own.
type extraKeys interface {
	decodeExtra(d *decoder, key string, value ast.Node, path string) bool
}

func (d *decoder) decodeStruct(node ast.Node, v reflect.Value, path string) {
	pairs, ok := mappingPairs(node)
	if !ok {
		d.addf(node, path, "must be a mapping, got %s", describe(node))
		return
	}
	fields := fieldIndex(v.Type())
	seen := map[string]bool{}
	var extra extraKeys
	if v.CanAddr() {
		extra, _ = v.Addr().Interface().(extraKeys)
	}
	for _, p := range pairs {
		k := keyString(p)
		kp := joinPath(path, k)
		if k == "<<" {
			d.addf(p.Key, kp, "YAML merge keys are not supported; repeat the keys")
			continue
		}
		if seen[k] {
			d.addf(p.Key, kp, "duplicate key")
			continue
		}
		seen[k] = true
		idx, ok := fields[k]
		if !ok {
			if extra != nil && extra.decodeExtra(d, k, p.Value, kp) {
				continue
			}
			msg := "unknown key"
			if m, ok := movedKeys[kp]; ok {
				msg = m
			} else if s := suggest(k, keysOf(fields)); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.problems = append(d.problems, &Problem{Line: line(p.Key), Path: kp, Msg: msg})
			continue
		}
		d.lines[kp] = line(p.Key)
		d.decode(p.Value, v.FieldByIndex(idx), kp)
	}
}

// movedKeys explains keys of earlier releases that moved or went away.
var movedKeys = map[string]string{
	"http.listen": "replaced by http.admin.listen (status page, metrics, /v1/… for the dialplan; loopback by default) " +
		"and http.public.listen (only what CRMs must reach); see docs/security.md",
	"http.public_url":   "moved to http.public.url",
	"http.status_token": "replaced by http.admin.token, which now guards the whole admin listener",
}

func keysOf(m map[string][]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keyString(p *ast.MappingValueNode) string {
	if p.Key == nil {
		return ""
	}
	return p.Key.GetToken().Value
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.SequenceNode:
		return "a list"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	}
	return fmt.Sprintf("%q", n.String())
}

// cleanYAMLError turns goccy's multi-line error with source snippet into one short phrase.
func cleanYAMLError(err error, t reflect.Type) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if strings.HasPrefix(msg, "[") {
		if i := strings.Index(msg, "] "); i >= 0 {
			msg = msg[i+2:]
		}
	}
	switch {
	case t == durationType:
		return "want a duration such as 30s, 5m or 2h"
	case t.Kind() == reflect.Bool:
		return "want true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "want a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "want a number"
	}
	return msg
}

// suggest returns the candidate closest to s when it is close enough to be a typo.
func suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD > 2 || bestD >= len(s) {
		return ""
	}
	return best
}

// editDistance is the optimal-string-alignment distance: insertions, deletions, substitutions
// and transpositions of adjacent characters ("hots" for "host") each cost one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
