package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Int is an integer that Bitrix24 sends as a JSON number, a numeric string, null or "" (ids
// are strings in user.get and tasks.task.add, numbers elsewhere). Null and "" decode as 0.
type Int int64

// UnmarshalJSON accepts 7, "7", null and "".
func (n *Int) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*n = 0
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			*n = 0
			return nil
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("integer %q: %w", s, err)
		}
		*n = Int(v)
		return nil
	}
	var f json.Number
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	v, err := f.Int64()
	if err != nil {
		fl, ferr := f.Float64()
		if ferr != nil {
			return fmt.Errorf("integer %s: %w", b, err)
		}
		v = int64(fl)
	}
	*n = Int(v)
	return nil
}

// String is a string that Bitrix24 may send as a number, a boolean or null.
type String string

// UnmarshalJSON accepts strings, numbers, booleans and null.
func (s *String) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*s = ""
	case b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = String(v)
	case b[0] == '{' || b[0] == '[':
		// Objects (CALL_START_DATE comes as {} in the docs) carry nothing we use.
		*s = ""
	default:
		*s = String(b)
	}
	return nil
}

// Bool is a flag Bitrix24 sends as true/false, "Y"/"N", 1/0 or "1"/"0".
type Bool bool

// UnmarshalJSON accepts the forms above; anything else is false.
func (v *Bool) UnmarshalJSON(b []byte) error {
	s := strings.Trim(strings.TrimSpace(string(b)), `"`)
	switch strings.ToUpper(s) {
	case "TRUE", "Y", "1":
		*v = true
	default:
		*v = false
	}
	return nil
}

// YN renders a boolean as Bitrix24's "Y"/"N".
func YN(b bool) string {
	if b {
		return "Y"
	}
	return "N"
}

// Flag renders a boolean as Bitrix24's 1/0.
func Flag(b bool) int {
	if b {
		return 1
	}
	return 0
}
