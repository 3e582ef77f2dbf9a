package connector

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// sdNotify sends a state to systemd when the daemon runs as a Type=notify service; it does
// nothing elsewhere.
func sdNotify(state string) {
	_, _ = daemon.SdNotify(false, state)
}

// watchdogInterval returns how often to ping systemd's watchdog (half of WatchdogSec), or 0.
func watchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// reloadSignals delivers SIGHUP until ctx ends.
func reloadSignals(ctx context.Context) <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		<-ctx.Done()
		signal.Stop(ch)
	}()
	return ch
}

// newLogger returns the daemon's logger: text (journald adds its own timestamps) or JSON.
func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// redactNumber masks a phone number in a log line when log.redact_numbers is on.
func (d *Daemon) redactNumber(n string) string {
	if !d.Config().Log.RedactNumbers {
		return n
	}
	return RedactNumber(n)
}

// RedactNumber masks the middle of a phone number, keeping enough to tell calls apart in a log:
// the first five and the last four characters (+7916***4567); shorter numbers keep their last
// two (10***23 is never printed for extensions of five characters or fewer, which stay whole).
func RedactNumber(n string) string {
	r := []rune(n)
	switch {
	case len(r) <= 5:
		return n
	case len(r) <= 9:
		return string(r[:2]) + "***" + string(r[len(r)-2:])
	}
	return string(r[:5]) + "***" + string(r[len(r)-4:])
}
