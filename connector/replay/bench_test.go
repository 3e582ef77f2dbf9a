package replay

import (
	"bytes"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
)

// labOptions recognises the lab's Local-channel parties (as connector/callmodel/testdata/lab.yaml
// does), so the benchmark exercises the whole model, not only the parser.
func labOptions(tb testing.TB) callmodel.Options {
	tb.Helper()
	o, err := callmodel.Config{
		Extensions: []string{`^Local/(?P<ext>\d+)@phones-[0-9a-f]+;1$`, `^Local/[^@]+@internal-[0-9a-f]+;1$`},
		Trunks:     []string{`^Local/[^@]+@from-pstn-[0-9a-f]+;2$`, `^Local/[^@]+@pstn-[0-9a-f]+;1$`},
	}.Compile(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

func loadAll(tb testing.TB, get func(string) ([]byte, error)) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, name := range transcripts.Scenarios() {
		b, err := get(name)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// benchReplay replays every transcript per iteration and reports events/s and allocations per
// event (everything: framing, normalising, the model, JSON output).
func benchReplay(b *testing.B, srcs [][]byte, run func(io.Reader, callmodel.Options, io.Writer) (Stats, error)) {
	b.Helper()
	opts := labOptions(b)
	var events, size int64
	for _, s := range srcs {
		size += int64(len(s))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		for _, s := range srcs {
			st, err := run(bytes.NewReader(s), opts, io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			events += int64(st.Events)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
	// A call is one transcript, as in the load harness.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*len(srcs)), "cpu-ns/call")
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	// On a shared host wall time includes waiting for a core; CPU time does not.
	b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(events), "allocs/event")
}

// cpuTime returns the process's user+system CPU time (GC included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAMIReplay: AMI frame reader + normaliser + call model over all lab transcripts.
func BenchmarkAMIReplay(b *testing.B) {
	benchReplay(b, loadAll(b, transcripts.AMI), AMIStats)
}

// BenchmarkARIReplay: JSON decoding + normaliser + call model over all lab ARI streams.
func BenchmarkARIReplay(b *testing.B) {
	benchReplay(b, loadAll(b, transcripts.ARI), ARIStats)
}

// BenchmarkAMIReplayEventFilter: BenchmarkAMIReplay over the transcripts as Asterisk sends them
// without (none) and with (eventfilter) the manager.conf lines of ami.EventFilterLines, for the
// lab's variables: the reader, normaliser and model's CPU per call that the filter saves. The
// captures are filtered beforehand (fakepbx.EventFilter, Asterisk's rules); frames/call counts
// the frames read.
func BenchmarkAMIReplayEventFilter(b *testing.B) {
	opts := labOptions(b)
	lines, err := ami.EventFilterLines(ami.AdvancedFilter, opts.Variables())
	if err != nil {
		b.Fatal(err)
	}
	flt, err := fakepbx.ParseEventFilter(lines)
	if err != nil {
		b.Fatal(err)
	}
	srcs := loadAll(b, transcripts.AMI)
	filtered := make([][]byte, len(srcs))
	for i, s := range srcs {
		filtered[i] = flt.FilterCapture(s)
	}
	for _, bc := range []struct {
		name string
		srcs [][]byte
	}{{"none", srcs}, {"eventfilter", filtered}} {
		b.Run(bc.name, func(b *testing.B) {
			frames := 0
			for _, s := range bc.srcs {
				st, err := AMIStats(bytes.NewReader(s), opts, io.Discard)
				if err != nil {
					b.Fatal(err)
				}
				frames += st.Frames + st.Discarded
			}
			b.ReportMetric(float64(frames)/float64(len(bc.srcs)), "frames/call")
			benchReplay(b, bc.srcs, AMIStats)
		})
	}
}
