package ami

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk"
	"github.com/pbxbridge/pbxbridge/asterisk/transcripts"
)

// noReadDelay turns Options.ReadDelay off (a function, so that the benchmark also builds
// against the code before ReadDelay, for comparisons).
func noReadDelay(o *Options) { o.ReadDelay = -1 }

// envBenchServer makes the test binary a stream server (TestMain): "burst" or "rate=<frames/s>",
// followed by ",filtered" for the stream a manager.conf EventFilterLines filter lets through.
// BenchmarkSourceReadPath runs the server in a process of its own, so that the benchmark's
// CPU time (getrusage of this process) is the client's alone.
const envBenchServer = "PBXBRIDGE_AMI_BENCH_SERVER"

// BenchmarkSourceReadPath measures the AMI read path of a Source, per event, with keepalive
// on and every event delivered (no read filter): socket reads, framing, routing, ToEvent,
// metrics and the hand-over to a consumer draining a 1024-event channel (the daemon's). The
// events are those of every transcript, sent by a stream server in another process, so
// cpu-ns/event (user+system time of this process, GC and scheduler included) is the client's.
//
//   - burst: the server writes 32 KiB at a time, as fast as the client reads: the cost of
//     reading, parsing and translating, with no goroutine ever waiting;
//   - rate-11k: the server writes each event with a write of its own, 11,000 a second in 1 ms
//     ticks, as Asterisk does at ~50 calls/s (220 events per call): goroutines park and wake
//     as in the daemon. -nodelay: with Options.ReadDelay off.
func BenchmarkSourceReadPath(b *testing.B) {
	for _, bc := range []struct {
		name, mode string
		nodelay    bool
	}{{"burst", "burst", false}, {"rate-11k", "rate=11000", false}, {"rate-11k-nodelay", "rate=11000", true}} {
		b.Run(bc.name, func(b *testing.B) { benchReadPath(b, startBenchServer(b, bc.mode), bc.nodelay) })
	}
}

// benchVars are the default variables of the call model (callmodel.Options.Variables).
var benchVars = []string{"MIXMONITOR_FILENAME", "PBXBRIDGE_ORIGINATE_ID", "FROM_DID"}

// BenchmarkSourceReadCalls measures the read path per call, as the daemon reads (read-time
// filter on, the default variables kept, unknown events not forwarded), without and with the
// manager.conf filter of EventFilterLines (the stream server sends what Asterisk would send
// with it: ami.NeededEvents, and VarSet for the default variables only; TestEventFilterLines
// checks that this is what the lines let through). One op is one pass over the 17 transcripts;
// a "call" is one transcript, as in the load harness. burst: as fast as the client reads;
// 50cps: 50 calls a second, each event written on its own (the rate of the profile that
// started this work); -nodelay: with Options.ReadDelay off. cpu-us/call is the client's CPU
// (the server runs in its own process).
func BenchmarkSourceReadCalls(b *testing.B) {
	for _, filtered := range []bool{false, true} {
		for _, pace := range []string{"burst", "50cps", "50cps-nodelay"} {
			name, mode := "none-"+pace, "burst"
			if filtered {
				name = "eventfilter-" + pace
			}
			if pace != "burst" {
				chunks, err := eventChunks(1, filtered)
				if err != nil {
					b.Fatal(err)
				}
				mode = "rate=" + strconv.Itoa(50*len(chunks)/len(transcripts.Scenarios()))
			}
			if filtered {
				mode += ",filtered"
			}
			nodelay := strings.HasSuffix(pace, "nodelay")
			b.Run(name, func(b *testing.B) { benchReadCalls(b, mode, filtered, nodelay) })
		}
	}
}

func benchReadCalls(b *testing.B, mode string, filtered, nodelay bool) {
	b.Helper()
	chunks, err := eventChunks(32<<10, filtered)
	if err != nil {
		b.Fatal(err)
	}
	// What a pass delivers: the frames the read-time filter keeps and ToEvent knows.
	filter := SourceFilter(benchVars)
	frames, perPass := 0, 0
	for _, c := range chunks {
		r := NewReader(bytes.NewReader(c))
		r.SetFilter(filter)
		var f Frame
		for r.ReadFrameTo(&f) == nil {
			if ev, ok := ToEvent(&f, "", time.Time{}); ok && ev.Type != asterisk.TypeUnknown {
				perPass++
			}
		}
		frames += bytes.Count(c, []byte("\r\n\r\n"))
	}
	o := Options{Name: "bench", Address: startBenchServer(b, mode), Username: "u", Secret: "s", VarSetVariables: benchVars}
	if nodelay {
		noReadDelay(&o)
	}
	src, err := NewSource(o)
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan asterisk.Event, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = src.Run(ctx, out) }()
	defer func() { cancel(); <-done }()
	for ev := range out { // past the login and the snapshot
		if ev.Type == asterisk.TypeSnapshotEnd {
			break
		}
	}
	calls := float64(len(transcripts.Scenarios()))
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N * perPass {
		<-out
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(frames)/calls, "frames/call")
	b.ReportMetric(float64(perPass)/calls, "events/call")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N)/calls, "cpu-us/call")
	}
}

func benchReadPath(b *testing.B, addr string, nodelay bool) {
	b.Helper()
	o := Options{
		Name: "bench", Address: addr, Username: "u", Secret: "s",
		KeepAllEvents: true, ForwardUnknown: true,
	}
	if nodelay {
		noReadDelay(&o)
	}
	src, err := NewSource(o)
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan asterisk.Event, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = src.Run(ctx, out) }()
	defer func() { cancel(); <-done }()
	for ev := range out { // past the login and the snapshot
		if ev.Type == asterisk.TypeSnapshotEnd {
			break
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		<-out
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/event")
	}
}

// startBenchServer runs this test binary as a stream server in mode and returns its address;
// the server ends with the benchmark.
func startBenchServer(b *testing.B, mode string) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), envBenchServer+"="+mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close() // the server exits when its stdin closes
		_ = cmd.Wait()
	})
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("stream server: %v", err)
	}
	return strings.TrimSpace(addr)
}

// benchServerMain is the stream server's main: it prints its address, serves one client and
// returns when its stdin closes.
func benchServerMain(mode string) int {
	rate := 0
	size := 32 << 10
	mode, filtered := strings.CutSuffix(mode, ",filtered")
	if r, ok := strings.CutPrefix(mode, "rate="); ok {
		n, err := strconv.Atoi(r)
		if err != nil || n <= 0 {
			fmt.Fprintln(os.Stderr, "bench server: bad mode", mode)
			return 2
		}
		rate, size = n, 1
	}
	chunks, err := eventChunks(size, filtered)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench server:", err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench server:", err)
		return 1
	}
	fmt.Println(ln.Addr().String())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = ln.Close()
		os.Exit(0)
	}()
	nc, err := ln.Accept()
	if err != nil {
		return 0
	}
	serveStream(nc, chunks, rate)
	return 0
}

// eventChunks returns every event frame of every transcript (not the responses, nor the
// events answering the recorder's own actions), in wire format, cut into frame-aligned chunks
// of about size bytes (1: one frame per chunk). filtered keeps only what the manager.conf
// lines of EventFilterLines(…, benchVars) let through.
func eventChunks(size int, filtered bool) ([][]byte, error) {
	needed := NeededEvents()
	var chunks [][]byte
	var cur []byte
	for _, name := range transcripts.Scenarios() {
		data, err := transcripts.AMI(name)
		if err != nil {
			return nil, err
		}
		r := NewReader(bytes.NewReader(data))
		if _, err := r.ReadBanner(); err != nil {
			return nil, err
		}
		for {
			f, err := r.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			if f.Event() == "" || f.ActionID() != "" {
				continue
			}
			if filtered && !passesEventFilter(f, needed) {
				continue
			}
			cur = f.AppendTo(cur)
			if len(cur) >= size {
				chunks, cur = append(chunks, cur), nil
			}
		}
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks, nil
}

// passesEventFilter reports whether Asterisk sends f with EventFilterLines(…, benchVars).
func passesEventFilter(f *Frame, needed []string) bool {
	if f.Event() == "VarSet" {
		return slices.Contains(benchVars, strings.TrimLeft(f.Get("Variable"), "_"))
	}
	return slices.Contains(needed, f.Event())
}

// serveStream accepts one login, answers CoreShowChannels (empty), CoreSettings and Ping,
// and writes the chunks in a loop: as fast as the client reads (rate 0) or rate a second in
// 1 ms ticks, one write each. Answers and chunks are never interleaved.
func serveStream(nc net.Conn, chunks [][]byte, rate int) {
	defer nc.Close()
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := nc.Write(b)
		return err
	}
	if write([]byte("Asterisk Call Manager/11.0.0\r\n")) != nil {
		return
	}
	r := NewReader(nc)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return
		}
		id := "ActionID: " + f.ActionID() + "\r\n"
		answer := "Response: Success\r\n" + id + "\r\n"
		switch f.Get("Action") {
		case "Login":
			if write([]byte("Response: Success\r\n"+id+"Message: Authentication accepted\r\n\r\n")) != nil {
				return
			}
			go writeChunks(chunks, rate, write)
			continue
		case "CoreShowChannels":
			answer = "Response: Success\r\n" + id + "EventList: start\r\nMessage: Channels will follow\r\n\r\n" +
				"Event: CoreShowChannelsComplete\r\n" + id + "EventList: Complete\r\nListItems: 0\r\n\r\n"
		case "CoreSettings":
			answer = "Response: Success\r\n" + id + "AsteriskVersion: 22.10.1\r\n\r\n"
		}
		if write([]byte(answer)) != nil {
			return
		}
	}
}

func writeChunks(chunks [][]byte, rate int, write func([]byte) error) {
	if rate <= 0 {
		for i := 0; ; i++ {
			if write(chunks[i%len(chunks)]) != nil {
				return
			}
		}
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	start, sent := time.Now(), 0
	for now := range t.C {
		for due := int(now.Sub(start).Seconds() * float64(rate)); sent < due; sent++ {
			if write(chunks[sent%len(chunks)]) != nil {
				return
			}
		}
	}
}
