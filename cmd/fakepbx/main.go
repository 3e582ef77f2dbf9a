// Command fakepbx runs a simulated Asterisk PBX on loopback: an AMI server replaying the real
// transcripts of package asterisk/transcripts, answering Login, Ping, CoreShowChannels,
// ExtensionState and Originate (click-to-call), and generating load; with --ari-listen also an
// ARI server (HTTP + events websocket) replaying the ARI transcripts, with its own calls and
// load. See package asterisk/fakepbx.
//
//	fakepbx --listen 127.0.0.1:5038 --rate 5 --calls 100
//	fakepbx --scenario inbound_answered,outbound_busy --rate 1 --speed 10
//	fakepbx --drop-every 30s        # drop every client connection every 30 s
//	fakepbx --extensions 101,102=busy,103=noanswer,104=unavailable
//	fakepbx --listen "" --ari-listen 127.0.0.1:8088 --rate 2   # ARI only
//
// Signals: SIGUSR1 drops every AMI client connection now (the calls keep playing); SIGUSR2 turns
// the current AMI client connections half-open (nothing is read or written any more).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pbxbridge/pbxbridge/asterisk/ami"
	"github.com/pbxbridge/pbxbridge/asterisk/fakepbx"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakepbx:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		listen    = flag.String("listen", "127.0.0.1:5038", "AMI address to listen on (empty: no AMI server)")
		ariListen = flag.String("ari-listen", "", "ARI (HTTP) address to listen on, e.g. 127.0.0.1:8088 (empty: no ARI server)")
		user      = flag.String("user", "pbxbridge", "AMI and ARI username accepted")
		secret    = flag.String("secret", "secret", "AMI secret and ARI password accepted")
		rate      = flag.Float64("rate", 0, "calls started per second (0: no generated load)")
		calls     = flag.Int("calls", 0, "calls to generate (0: until interrupted, when --rate is set)")
		scenario  = flag.String("scenario", "", "comma-separated scenarios to draw from (default: all but concurrent)")
		seed      = flag.Uint64("seed", 1, "seed of the random scenario mix")
		speed     = flag.Float64("speed", 1, "speed factor of the replays (0: as fast as possible)")
		dropEvery = flag.Duration("drop-every", 0, "drop every client connection this often (0: never)")
		noTS      = flag.Bool("no-timestamps", false, "omit the Timestamp header (Asterisk's default)")
		extSpec   = flag.String("extensions", "101,102,103", "extensions for ExtensionState/Originate: ext[=answer|busy|noanswer|congestion|fail|reject|inuse|unavailable],...")
		list      = flag.Bool("list", false, "list the scenarios and exit")
		verbose   = flag.Bool("v", false, "verbose logs")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	exts, err := parseExtensions(*extSpec)
	if err != nil {
		return err
	}
	sp := *speed
	if sp == 0 {
		sp = math.Inf(1)
	}
	if *listen == "" && *ariListen == "" {
		return errors.New("nothing to serve: set --listen and/or --ari-listen")
	}
	var srv *fakepbx.Server
	if *listen != "" {
		s, err := fakepbx.Start(fakepbx.Config{
			Addr: *listen, Username: *user, Secret: *secret, Speed: sp, Seed: *seed,
			DropEvery: *dropEvery, NoTimestamps: *noTS, Logger: log, Extensions: exts,
		})
		if err != nil {
			return err
		}
		defer func() { _ = s.Close() }()
		srv = s
	}
	var ari *fakepbx.ARIServer
	if *ariListen != "" {
		s, err := fakepbx.StartARI(fakepbx.ARIConfig{
			Addr: *ariListen, Username: *user, Password: *secret, Speed: sp, Seed: *seed,
			DropEvery: *dropEvery, Logger: log,
		})
		if err != nil {
			return err
		}
		defer func() { _ = s.Close() }()
		ari = s
	}
	if *list {
		if srv != nil {
			fmt.Println(strings.Join(srv.Scenarios(), "\n"))
		} else {
			fmt.Println(strings.Join(ari.Scenarios(), "\n"))
		}
		return nil
	}
	if srv != nil {
		log.Info("fakepbx AMI listening", "addr", srv.Addr(), "user", *user)
	}
	if ari != nil {
		log.Info("fakepbx ARI listening", "url", ari.URL(), "user", *user)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go report(ctx, srv, ari, log)
	if srv != nil {
		go faults(ctx, srv, log)
	}
	if *rate > 0 || *calls > 0 {
		var mix []string
		if *scenario != "" {
			mix = strings.Split(*scenario, ",")
		}
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		if srv != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := srv.Load(ctx, fakepbx.LoadOptions{Rate: *rate, Calls: *calls, Scenarios: mix, Seed: *seed})
				errs <- err
				log.Info("AMI load finished", "calls", n, "elapsed", time.Since(start).Round(time.Millisecond), "events_sent", srv.Stats().EventsSent)
			}()
		}
		if ari != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := ari.Load(ctx, fakepbx.ARILoadOptions{Rate: *rate, Calls: *calls, Scenarios: mix, Seed: *seed})
				errs <- err
				log.Info("ARI load finished", "calls", n, "elapsed", time.Since(start).Round(time.Millisecond), "events_sent", ari.Stats().EventsSent)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
		}
		if *calls > 0 && ctx.Err() == nil {
			return nil
		}
	}
	<-ctx.Done()
	return nil
}

// report logs the servers' counters every 10 s.
func report(ctx context.Context, srv *fakepbx.Server, ari *fakepbx.ARIServer, log *slog.Logger) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if srv != nil {
				st := srv.Stats()
				log.Info("AMI stats", "clients", st.Sessions, "calls_started", st.CallsStarted,
					"calls_finished", st.CallsFinished, "events_sent", st.EventsSent, "drops", st.Drops)
			}
			if ari != nil {
				st := ari.Stats()
				log.Info("ARI stats", "clients", st.Sessions, "calls_started", st.CallsStarted,
					"calls_finished", st.CallsFinished, "events_sent", st.EventsSent, "drops", st.Drops)
			}
		}
	}
}

// faults drops (SIGUSR1) or stalls (SIGUSR2) the client connections on demand.
func faults(ctx context.Context, srv *fakepbx.Server, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sig)
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sig:
			if s == syscall.SIGUSR1 {
				log.Info("dropped client connections", "count", srv.DropClients())
			} else {
				log.Info("client connections now half-open", "count", srv.StallClients())
			}
		}
	}
}

// parseExtensions parses "101,102=busy,104=unavailable".
func parseExtensions(spec string) (map[string]fakepbx.Ext, error) {
	out := map[string]fakepbx.Ext{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		ext, mode, _ := strings.Cut(item, "=")
		e := fakepbx.Ext{State: ami.ExtIdle, Outcome: fakepbx.Answer}
		switch mode {
		case "", "answer":
		case "busy", "noanswer", "congestion", "fail", "reject":
			e.Outcome = fakepbx.Outcome(mode)
		case "inuse":
			e.State = ami.ExtInUse
		case "unavailable":
			e.State = ami.ExtUnavailable
		default:
			return nil, fmt.Errorf("--extensions: %q: unknown mode %q", ext, mode)
		}
		out[ext] = e
	}
	return out, nil
}
