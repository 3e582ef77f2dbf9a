package fakecrm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// b24Params are the parameters of one REST call, whatever encoding they came in: JSON values
// (map[string]any, []any, float64, string, bool, nil) or PHP-style form values (nested
// map[string]any of strings).
type b24Params map[string]any

const b24MaxBody = 64 << 20

// b24ReadParams merges the query string and the body (JSON, urlencoded or multipart) of r.
// Multipart file parts are returned separately.
func b24ReadParams(r *http.Request) (b24Params, map[string][]byte, error) {
	p := b24Params{}
	if err := b24MergeForm(p, r.URL.Query()); err != nil {
		return nil, nil, err
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		return p, nil, nil
	}
	ct, ctParams, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body := http.MaxBytesReader(nil, r.Body, b24MaxBody)
	switch ct {
	case "multipart/form-data":
		mr := multipart.NewReader(body, ctParams["boundary"])
		files := map[string][]byte{}
		vals := url.Values{}
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, nil, fmt.Errorf("multipart: %w", err)
			}
			b, err := io.ReadAll(part)
			if err != nil {
				return nil, nil, fmt.Errorf("multipart: %w", err)
			}
			if part.FileName() != "" {
				files[part.FormName()] = b
				vals.Set(part.FormName()+"__filename", part.FileName())
				continue
			}
			vals.Add(part.FormName(), string(b))
		}
		if err := b24MergeForm(p, vals); err != nil {
			return nil, nil, err
		}
		return p, files, nil
	case "application/x-www-form-urlencoded":
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, nil, err
		}
		vals, err := url.ParseQuery(string(b))
		if err != nil {
			return nil, nil, fmt.Errorf("form: %w", err)
		}
		return p, nil, b24MergeForm(p, vals)
	default: // JSON is the default (A.1.1)
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, nil, err
		}
		if len(strings.TrimSpace(string(b))) == 0 {
			return p, nil, nil
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, nil, fmt.Errorf("json: %w", err)
		}
		for k, v := range m {
			p[k] = v
		}
		return p, nil, nil
	}
}

// b24MergeForm turns PHP-style keys (a[b][c], a[]) into nested maps.
func b24MergeForm(p b24Params, vals url.Values) error {
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range vals[k] {
			if err := b24SetPath(p, k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func b24SetPath(p map[string]any, key, val string) error {
	i := strings.IndexByte(key, '[')
	if i < 0 {
		p[key] = val
		return nil
	}
	if i == 0 {
		return fmt.Errorf("malformed key %q", key)
	}
	var path []string
	base, rest := key[:i], key[i:]
	for rest != "" {
		if rest[0] != '[' {
			return fmt.Errorf("malformed key %q", key)
		}
		j := strings.IndexByte(rest, ']')
		if j < 0 {
			return fmt.Errorf("malformed key %q", key)
		}
		path = append(path, rest[1:j])
		rest = rest[j+1:]
	}
	cur := p
	name := base
	for _, seg := range path {
		next, ok := cur[name].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[name] = next
		}
		cur = next
		name = seg
		if name == "" {
			name = strconv.Itoa(len(cur))
		}
	}
	cur[name] = val
	return nil
}

// get returns a parameter by name, case-insensitively.
func (p b24Params) get(name string) (any, bool) {
	if v, ok := p[name]; ok {
		return v, true
	}
	for k, v := range p {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

func (p b24Params) str(name string) string {
	v, _ := p.get(name)
	s, _ := b24Str(v)
	return s
}

func (p b24Params) integer(name string) (int, bool) {
	v, ok := p.get(name)
	if !ok {
		return 0, false
	}
	return b24Int(v)
}

func b24Str(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		if x {
			return "1", true
		}
		return "0", true
	case json.Number:
		return x.String(), true
	}
	return "", false
}

func b24Int(v any) (int, bool) {
	switch x := v.(type) {
	case float64:
		return int(x), true
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		return n, err == nil
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// b24List returns the elements of a JSON array or a PHP list (map with numeric keys) or a
// single value.
func b24List(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		return x
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			a, ea := strconv.Atoi(keys[i])
			b, eb := strconv.Atoi(keys[j])
			if ea == nil && eb == nil {
				return a < b
			}
			return keys[i] < keys[j]
		})
		out := make([]any, 0, len(keys))
		for _, k := range keys {
			out = append(out, x[k])
		}
		return out
	}
	return []any{v}
}

func b24Map(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func b24Truthy(v any) bool {
	s, _ := b24Str(v)
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "1", "Y", "TRUE":
		return true
	}
	return false
}

// b24Digits normalises a phone number for matching: digits only, a leading Russian trunk 8
// of an 11-digit number read as 7.
func b24Digits(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	d := b.String()
	if len(d) == 11 && d[0] == '8' {
		d = "7" + d[1:]
	}
	return d
}
