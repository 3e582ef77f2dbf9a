package ami

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// transcriptStream returns every transcript's frames behind one banner, and the frame count.
func transcriptStream(b *testing.B) ([]byte, int) {
	b.Helper()
	var buf bytes.Buffer
	buf.WriteString(banner)
	frames := 0
	for _, name := range transcripts.Scenarios() {
		data, err := transcripts.AMI(name)
		if err != nil {
			b.Fatal(err)
		}
		buf.Write(data[len(banner):])
		frames += bytes.Count(data, []byte("\r\n\r\n"))
	}
	return buf.Bytes(), frames
}

// perFrame reports frames/s (wall clock), frames per CPU-second (all of the process's threads,
// GC included: the figure that holds on a loaded machine) and allocations per frame, for a
// benchmark over n frames per op.
func perFrame(b *testing.B, n int, run func()) {
	b.Helper()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for b.Loop() {
		run()
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	total := float64(n) * float64(b.N)
	b.ReportMetric(total/elapsed.Seconds(), "frames/s")
	if cpu > 0 {
		b.ReportMetric(total/cpu.Seconds(), "frames/cpu-s")
	}
	b.ReportMetric(float64(elapsed.Nanoseconds())/total, "ns/frame")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/total, "allocs/frame")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/total, "B/frame")
}

// BenchmarkReadFrame: the frame reader alone over all the transcripts (3.5 MB, ~10k frames).
func BenchmarkReadFrame(b *testing.B) {
	data, frames := transcriptStream(b)
	b.SetBytes(int64(len(data)))
	perFrame(b, frames, func() {
		r := NewReader(bytes.NewReader(data))
		if _, err := r.ReadBanner(); err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := r.ReadFrame(); err != nil {
				if errors.Is(err, io.EOF) {
					return
				}
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReadFrameToEvent: reader plus normaliser, the per-event work of the AMI intake, done
// as a Source's reader goroutine does it (one Frame reused, ToEvent).
func BenchmarkReadFrameToEvent(b *testing.B) {
	data, frames := transcriptStream(b)
	b.SetBytes(int64(len(data)))
	perFrame(b, frames, func() { readToEvents(b, data, nil) })
}

// readToEvents reads every frame of data (through filter, when not nil) and normalises it.
func readToEvents(b *testing.B, data []byte, filter *Filter) {
	b.Helper()
	recv := time.Unix(1, 0)
	r := NewReader(bytes.NewReader(data))
	if filter != nil {
		r.SetFilter(*filter)
	}
	if _, err := r.ReadBanner(); err != nil {
		b.Fatal(err)
	}
	var f Frame
	for {
		err := r.ReadFrameTo(&f)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			b.Fatal(err)
		}
		_, _ = ToEvent(&f, "lab", recv)
	}
}

// BenchmarkBaselineScanLines calibrates the machine: bufio.Scanner over the same stream, with no
// parsing at all. On a shared machine, compare the reader with this rather than with absolute
// figures.
func BenchmarkBaselineScanLines(b *testing.B) {
	data, frames := transcriptStream(b)
	b.SetBytes(int64(len(data)))
	perFrame(b, frames, func() {
		sc := bufio.NewScanner(bytes.NewReader(data))
		n := 0
		for sc.Scan() {
			n += len(sc.Bytes())
		}
		if n == 0 {
			b.Fatal("nothing scanned")
		}
	})
}

// BenchmarkReadFilter: reader plus normaliser over all the transcripts, without a filter and with
// the filter a Source uses (CEL and unused events discarded, VarSets of variables the call
// model does not read trimmed; the lab's variables kept), in one run. Figures are per frame on
// the wire, so the two are directly comparable.
func BenchmarkReadFilter(b *testing.B) {
	data, frames := transcriptStream(b)
	vars := []string{"MIXMONITOR_FILENAME", "PBXBRIDGE_ORIGINATE_ID", "CRM_ORIGINATE_ID", "FROM_DID", "LAB_DID"}
	for _, bc := range []struct {
		name   string
		filter *Filter
	}{{"raw", nil}, {"filtered", &Filter{Discard: SourceFilter(vars).Discard, VarSetKeep: vars}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			perFrame(b, frames, func() { readToEvents(b, data, bc.filter) })
		})
	}
}

// BenchmarkToEvent: the normaliser alone, over every frame of every transcript read beforehand.
func BenchmarkToEvent(b *testing.B) {
	data, _ := transcriptStream(b)
	r := NewReader(bytes.NewReader(data))
	if _, err := r.ReadBanner(); err != nil {
		b.Fatal(err)
	}
	var frames []*Frame
	for {
		f, err := r.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		frames = append(frames, f)
	}
	recv := time.Unix(1, 0)
	perFrame(b, len(frames), func() {
		for _, f := range frames {
			_, _ = ToEvent(f, "lab", recv)
		}
	})
}
