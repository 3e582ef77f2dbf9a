package callmodel_test

import (
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
	"github.com/pbxbridge/pbxbridge/connector/callmodel"
	"github.com/pbxbridge/pbxbridge/crm/call"
)

type discard struct{}

func (discard) Live(*call.Live)     {}
func (discard) Record(*call.Record) {}

// BenchmarkBuilder measures the model alone on pre-normalised events of every lab transcript.
func BenchmarkBuilder(b *testing.B) {
	opts := loadOptions(b, "testdata/lab.yaml")
	opts.Normalize = nil // phone-number parsing is measured in asterisk/numbers
	var streams [][]asterisk.Event
	var n int
	for _, name := range transcripts.Scenarios() {
		src, err := transcripts.AMI(name)
		if err != nil {
			b.Fatal(err)
		}
		evs := readAMIEvents(b, src)
		streams = append(streams, evs)
		n += len(evs)
	}
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var total int64
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		for _, evs := range streams {
			bl := callmodel.NewBuilder(opts, discard{})
			for i := range evs {
				bl.Apply(&evs[i])
			}
		}
		total += int64(n)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(total)/cpu.Seconds(), "events/cpu-s")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(total), "allocs/event")
}

// cpuTime returns the process's user+system CPU time (GC included): on a shared host wall time
// includes waiting for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
