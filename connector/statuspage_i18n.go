package connector

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/config"
)

// The status page speaks English and Russian. Every text of both pages is a key of messages
// (statuspage_messages.go) with both translations; numbers, durations and dates are formatted
// for the language here. The language comes from http.admin.language, or with "auto" from the
// browser's Accept-Language (English when it names neither).

// lang is a status page language.
type lang int

const (
	langEN lang = iota
	langRU
)

// langs lists the languages in catalogue order.
var langs = []lang{langEN, langRU}

// Code is the language's BCP 47 code (the page's lang attribute).
func (l lang) Code() string {
	if l == langRU {
		return "ru"
	}
	return "en"
}

// msg is one message in both languages. A plural message holds its forms separated by "|":
// English one|other, Russian one|few|many.
type msg struct{ en, ru string }

func (m msg) in(l lang) string {
	if l == langRU {
		return m.ru
	}
	return m.en
}

// T returns the message key in l, or the key itself when the catalogue lacks it (a test
// checks that every key used exists).
func (l lang) T(key string) string {
	if m, ok := messages[key]; ok {
		return m.in(l)
	}
	return key
}

// TOr returns the message key in l, or fallback when the catalogue lacks it (keys built from
// values that may grow: CRM states, timeline kinds).
func (l lang) TOr(key, fallback string) string {
	if m, ok := messages[key]; ok {
		return m.in(l)
	}
	return fallback
}

// F formats the message key in l with args (fmt verbs).
func (l lang) F(key string, args ...any) string { return fmt.Sprintf(l.T(key), args...) }

// N is the plural message key for n, with n formatted in front: "3 calls", "3 звонка".
func (l lang) N(key string, n int64) string { return l.Num(n) + "\u00a0" + l.plural(key, n) }

// plural picks the form of the plural message key for n.
func (l lang) plural(key string, n int64) string {
	forms := strings.Split(l.T(key), "|")
	i := 0
	if n < 0 {
		n = -n
	}
	switch l {
	case langRU:
		switch d, h := n%10, n%100; {
		case d == 1 && h != 11:
			i = 0
		case d >= 2 && d <= 4 && (h < 12 || h > 14):
			i = 1
		default:
			i = 2
		}
	default:
		if n != 1 {
			i = 1
		}
	}
	return forms[min(i, len(forms)-1)]
}

// Num formats an integer with the language's digit grouping: 12,345 or 12 345.
func (l lang) Num(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	sep := ","
	if l == langRU {
		sep = "\u00a0"
	}
	if len(s) > 3 {
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteString(sep)
			}
			b.WriteRune(c)
		}
		s = b.String()
	}
	if neg {
		return "−" + s
	}
	return s
}

// Dec formats x with the given number of decimals and the language's decimal mark.
func (l lang) Dec(x float64, decimals int) string {
	s := strconv.FormatFloat(x, 'f', decimals, 64)
	if l == langRU {
		s = strings.Replace(s, ".", ",", 1)
	}
	return s
}

// Pct formats part/total as a whole percentage ("—" when total is 0).
func (l lang) Pct(part, total int64) string {
	if total <= 0 {
		return "—"
	}
	return strconv.Itoa(int(math.Round(100*float64(part)/float64(total)))) + "\u00a0%"
}

// Dur formats a duration for people: 850 ms, 1.2 s, 42 s, 3 min 5 s, 2 h 5 min, 3 d 4 h.
func (l lang) Dur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	u := func(key string) string { return "\u00a0" + l.T(key) }
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + u("unit.ms")
	case d < 10*time.Second:
		return l.Dec(d.Seconds(), 1) + u("unit.s")
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + u("unit.s")
	case d < time.Hour:
		m, s := int(d.Minutes()), int(d.Seconds())%60
		if s == 0 {
			return strconv.Itoa(m) + u("unit.min")
		}
		return strconv.Itoa(m) + u("unit.min") + " " + strconv.Itoa(s) + u("unit.s")
	case d < 48*time.Hour:
		h, m := int(d.Hours()), int(d.Minutes())%60
		if m == 0 {
			return strconv.Itoa(h) + u("unit.h")
		}
		return strconv.Itoa(h) + u("unit.h") + " " + strconv.Itoa(m) + u("unit.min")
	}
	days, h := int(d.Hours())/24, int(d.Hours())%24
	if h == 0 {
		return strconv.Itoa(days) + u("unit.d")
	}
	return strconv.Itoa(days) + u("unit.d") + " " + strconv.Itoa(h) + u("unit.h")
}

// Clock formats a talk or ring time in seconds as m:ss (h:mm:ss from an hour).
func (l lang) Clock(seconds int) string {
	if seconds < 0 {
		seconds = 0
	}
	h, m, s := seconds/3600, seconds/60%60, seconds%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%d:%02d", m, s)
}

// monthsRU are the Russian month names in the genitive ("2 января"), monthsRUShort abbreviated.
var (
	monthsRU      = [...]string{"января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября", "ноября", "декабря"}
	monthsRUShort = [...]string{"янв", "фев", "мар", "апр", "мая", "июн", "июл", "авг", "сен", "окт", "ноя", "дек"}
)

// When formats a moment relative to now: the time alone today, the day and time otherwise, the
// year too when it is not this year.
func (l lang) When(t, now time.Time) string {
	if t.IsZero() {
		return "—"
	}
	t = t.In(now.Location())
	y, m, d := t.Date()
	ny, nm, nd := now.Date()
	switch {
	case y == ny && m == nm && d == nd:
		return t.Format("15:04:05")
	case y == ny && l == langRU:
		return fmt.Sprintf("%d %s %s", d, monthsRUShort[m-1], t.Format("15:04"))
	case y == ny:
		return t.Format("Jan 2 15:04")
	case l == langRU:
		return fmt.Sprintf("%d %s %d %s", d, monthsRUShort[m-1], y, t.Format("15:04"))
	}
	return t.Format("Jan 2 2006 15:04")
}

// Stamp formats a moment in full (tooltips, the call page).
func (l lang) Stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	if l == langRU {
		return t.Format("02.01.2006 15:04:05 MST")
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

// Date formats a civil date given as YYYY-MM-DD (licence terms): 31 January 2027, 31 января
// 2027. Anything else is returned as it is.
func (l lang) Date(s string) string {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return s
	}
	if l == langRU {
		return fmt.Sprintf("%d %s %d", t.Day(), monthsRU[t.Month()-1], t.Year())
	}
	return t.Format("2 January 2006")
}

// Hour formats the start of an hour bucket for chart labels: 15:00.
func (l lang) Hour(t time.Time) string { return t.Format("15:04") }

// pageLang picks the language of a status page request: http.admin.language when it is ru or
// en, else the browser's preference.
func (d *Daemon) pageLang(r *http.Request) lang {
	switch d.Config().HTTP.Admin.Language {
	case config.LanguageRussian:
		return langRU
	case config.LanguageEnglish:
		return langEN
	}
	return acceptLanguage(r.Header.Get("Accept-Language"))
}

// maxAcceptLanguage bounds the Accept-Language header read (browsers send a few dozen bytes).
const maxAcceptLanguage = 1024

// acceptLanguage picks Russian or English from an Accept-Language header (RFC 9110 §12.5.4):
// the language range with the highest weight that is ru or en (or a subtag of one) wins, the
// earlier one on a tie; "*" means English. Malformed parts are skipped; English is the default.
func acceptLanguage(header string) lang {
	if len(header) > maxAcceptLanguage {
		header = header[:maxAcceptLanguage]
	}
	best, bestQ := langEN, -1.0
	for part := range strings.SplitSeq(header, ",") {
		tag, params, _ := strings.Cut(part, ";")
		tag = strings.ToLower(strings.TrimSpace(tag))
		primary, _, _ := strings.Cut(tag, "-")
		var l lang
		switch primary {
		case "ru":
			l = langRU
		case "en", "*":
			l = langEN
		default:
			continue
		}
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			name, value, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil || v < 0 || v > 1 || math.IsNaN(v) {
				q = -1
				break
			}
			q = v
		}
		if q > 0 && q > bestQ {
			best, bestQ = l, q
		}
	}
	return best
}
