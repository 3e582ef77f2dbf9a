package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error is a non-success answer of amoCRM/Kommo (problem+json, docs/crm-apis.md B.3), or a refusal
// made by the client itself while the account is blocked.
type Error struct {
	Method, Path string
	HTTPStatus   int
	Title        string
	Detail       string
	Hint         string // OAuth errors
	// RetryAfter is the wait the server asked for (429 retry_after or Retry-After header).
	RetryAfter time.Duration
	// Blocked: a 403 that follows repeated 429s (the IP/account is blocked), or a local refusal
	// while such a block is assumed to last.
	Blocked bool
	// Paused: a local refusal while the account pauses after a 429 (the Limiter): the request
	// was not sent, and the pause lasts RetryAfter more.
	Paused bool
	// Items are the per-item failures of a batch answer (e.g. 263 Entity not found).
	Items []ItemError
	// Validation are the validation-errors of a 400 answer.
	Validation []ValidationError
	// Excerpt is the start of a body that was not problem+json.
	Excerpt string
}

// ValidationError is one element of "validation-errors".
type ValidationError struct {
	RequestID RequestID `json:"request_id"`
	Errors    []struct {
		Code   string `json:"code"`
		Path   string `json:"path"`
		Detail string `json:"detail"`
	} `json:"errors"`
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Method != "" {
		fmt.Fprintf(&b, "%s %s: ", e.Method, e.Path)
	}
	if e.Paused && e.HTTPStatus == 0 {
		fmt.Fprintf(&b, "not sent: the account pauses after amoCRM's 429 for %v more", e.RetryAfter.Round(time.Second))
		return b.String()
	}
	if e.Blocked && e.HTTPStatus == 0 {
		fmt.Fprintf(&b, "not sent: the account is blocked for too many requests for %v more", e.RetryAfter.Round(time.Second))
		return b.String()
	}
	fmt.Fprintf(&b, "http %d", e.HTTPStatus)
	if e.Title != "" {
		b.WriteString(": " + e.Title)
	}
	if e.Detail != "" && e.Detail != e.Title {
		b.WriteString(": " + e.Detail)
	}
	if e.Hint != "" {
		b.WriteString(" (" + e.Hint + ")")
	}
	for i, it := range e.Items {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Items)-i)
			break
		}
		fmt.Fprintf(&b, "; item %s: %s %s", it.RequestID, it.Status, it.Title)
	}
	for i, v := range e.Validation {
		if i == 3 {
			break
		}
		for _, ve := range v.Errors {
			fmt.Fprintf(&b, "; item %s: %s %s", v.RequestID, ve.Path, ve.Code)
		}
	}
	if e.Excerpt != "" {
		b.WriteString(": " + e.Excerpt)
	}
	if e.Blocked {
		b.WriteString(" (blocked after repeated 429)")
	}
	return b.String()
}

// IsStatus reports whether err is an *Error with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.HTTPStatus == status
}

// AllItems reports whether every failed item of err has the given item status (and there is at
// least one).
func (e *Error) AllItems(code int) bool {
	if len(e.Items) == 0 {
		return false
	}
	for i := range e.Items {
		if e.Items[i].Code() != code {
			return false
		}
	}
	return true
}

// maxBody bounds what the decoders read.
const maxBody = 8 << 20

// DecodeError builds the Error for a non-2xx answer. It never fails: bodies that are not
// problem+json (a 429 or 403 from a proxy, HTML) are kept as a short excerpt. retryAfterHeader
// is the Retry-After header value ("" when absent).
func DecodeError(status int, body []byte, retryAfterHeader string) *Error {
	e := &Error{HTTPStatus: status}
	if len(body) > maxBody {
		body = body[:maxBody]
	}
	var p struct {
		Title      string            `json:"title"`
		Detail     Text              `json:"detail"`
		Hint       string            `json:"hint"`
		RetryAfter json.Number       `json:"retry_after"`
		Errors     []ItemError       `json:"errors"`
		Validation []ValidationError `json:"validation-errors"`
	}
	if err := json.Unmarshal(body, &p); err == nil {
		e.Title, e.Detail, e.Hint = p.Title, p.Detail.String(), p.Hint
		e.Items, e.Validation = p.Errors, p.Validation
		if s, err := p.RetryAfter.Float64(); err == nil && s > 0 && s < 86400*7 {
			e.RetryAfter = time.Duration(s * float64(time.Second))
		}
	} else {
		e.Excerpt = excerpt(body)
	}
	if e.RetryAfter == 0 && retryAfterHeader != "" {
		if s, err := strconv.ParseInt(strings.TrimSpace(retryAfterHeader), 10, 64); err == nil && s > 0 && s < 86400*7 {
			e.RetryAfter = time.Duration(s) * time.Second
		} else if t, err := http.ParseTime(retryAfterHeader); err == nil {
			if d := time.Until(t); d > 0 && d < 7*24*time.Hour {
				e.RetryAfter = d
			}
		}
	}
	return e
}

func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200]
	}
	for !utf8.ValidString(s) && len(s) > 0 {
		s = s[:len(s)-1]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 {
			return ' '
		}
		return r
	}, s)
}
