// Package replay runs a recorded PBX event stream through the call model and prints the finished
// calls as JSON lines in the schema of docs/design.md §4 (call.Record). It backs
// `pbxbridge replay --ami FILE` and `--ari FILE`, and the golden tests.
//
// Replay is deterministic: the same input and options always print the same bytes. Event times
// come from the stream (AMI Timestamp headers, ARI timestamps); a frame without a timestamp
// takes the time of the last one that had one (the Unix epoch before any), so a capture made
// without `timestampevents=yes` still replays, with meaningless durations. At the end of the
// stream the calls still open are flushed (flag "flushed") at the time of the last event.
package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/ari"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

// Stats counts what a replay saw.
type Stats struct {
	Frames  int // AMI frames or ARI messages read
	Events  int // events given to the model
	Skipped int // AMI frames too large, ARI lines that did not decode
	Records int
	// Discarded counts the AMI frames the read-time filter discarded (not in Frames); see
	// AMIStats.
	Discarded int
}

// AMI replays an AMI capture (the raw bytes of a Manager session, banner optional) and writes
// one JSON Record per line to w.
func AMI(r io.Reader, opts callmodel.Options, w io.Writer) error {
	_, err := AMIStats(r, opts, w)
	return err
}

// AMIStats is AMI that also returns counts. It reads through the same read-time filter as the
// daemon's AMI source (ami.SourceFilter with opts.Variables()), so a replay sees what the daemon
// sees.
func AMIStats(r io.Reader, opts callmodel.Options, w io.Writer) (Stats, error) {
	f := ami.SourceFilter(opts.Variables())
	return amiStats(r, opts, w, &f)
}

// amiStats is AMIStats with the given read-time filter (nil: every frame whole).
func amiStats(r io.Reader, opts callmodel.Options, w io.Writer, filter *ami.Filter) (st Stats, err error) {
	out := newWriter(w, &st)
	b := callmodel.NewBuilder(opts, out)
	br := bufio.NewReaderSize(r, 64<<10)
	rd := ami.NewReader(br)
	if filter != nil {
		rd.SetFilter(*filter)
	}
	defer func() { st.Discarded = int(rd.Discarded()) }()
	if head, _ := br.Peek(len("Asterisk Call Manager/")); bytes.Equal(head, []byte("Asterisk Call Manager/")) {
		if _, err := rd.ReadBanner(); err != nil {
			return st, fmt.Errorf("replay: %w", err)
		}
	}
	clock := time.Unix(0, 0).UTC()
	var f ami.Frame // reused: each frame is done with before the next is read
	for {
		err = rd.ReadFrameTo(&f)
		if errors.Is(err, ami.ErrFrameTooLarge) {
			st.Skipped++
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("replay: reading AMI: %w", err)
		}
		st.Frames++
		ev, ok := ami.ToEvent(&f, "", clock)
		if !ok {
			continue
		}
		clock = ev.Time
		st.Events++
		b.Apply(&ev)
		if out.err != nil {
			return st, out.err
		}
	}
	b.Flush(clock, true)
	return st, out.err
}

// ARI replays ARI websocket messages, one JSON object per line, and writes one JSON Record per
// line to w. Lines that do not decode are skipped and counted.
func ARI(r io.Reader, opts callmodel.Options, w io.Writer) error {
	_, err := ARIStats(r, opts, w)
	return err
}

// ARIStats is ARI that also returns counts.
func ARIStats(r io.Reader, opts callmodel.Options, w io.Writer) (Stats, error) {
	var st Stats
	out := newWriter(w, &st)
	b := callmodel.NewBuilder(opts, out)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), ari.MaxMessageSize)
	clock := time.Unix(0, 0).UTC()
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		st.Frames++
		ev, ok, err := ari.ToEvent(line, "", clock)
		if err != nil {
			st.Skipped++
			continue
		}
		if !ok {
			continue
		}
		clock = ev.Time
		st.Events++
		b.Apply(&ev)
		if out.err != nil {
			return st, out.err
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("replay: reading ARI: %w", err)
	}
	b.Flush(clock, true)
	return st, out.err
}

// writer prints records as JSON lines and ignores live events.
type writer struct {
	w   io.Writer
	st  *Stats
	err error
}

func newWriter(w io.Writer, st *Stats) *writer { return &writer{w: w, st: st} }

func (o *writer) Live(*call.Live) {}

func (o *writer) Record(r *call.Record) {
	if o.err != nil {
		return
	}
	line, err := json.Marshal(r)
	if err != nil {
		o.err = fmt.Errorf("replay: encoding record %s: %w", r.CallID, err)
		return
	}
	line = append(line, '\n')
	if _, err := o.w.Write(line); err != nil {
		o.err = fmt.Errorf("replay: writing record: %w", err)
		return
	}
	o.st.Records++
}

var _ callmodel.Output = (*writer)(nil)
