package ami

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Capture records the raw byte stream of a live PBX to w, for support tickets: exactly the bytes
// the PBX sent — the banner, the login response, every event and response — in the format of
// the transcripts (asterisk/transcripts), which `pbxbridge replay --ami` reads back. What we send
// (the login with its secret) is never written. Keepalive pongs are part of the stream; readers
// skip responses.
//
// Capture runs until ctx ends (the caller bounds the duration with context.WithTimeout, or
// cancels it on Ctrl-C); then it logs off, so the capture ends with "Response: Goodbye" like the
// transcripts, and returns nil. If the connection fails first it returns that error; the bytes
// captured up to then are in w. Capture does not reconnect. w is written from one goroutine.
func Capture(ctx context.Context, opts Options, w io.Writer) error {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return err
	}
	conn, err := dial(ctx, opts, nil, w, nil, nil) // no filter: the capture is raw anyway
	if err != nil {
		return fmt.Errorf("ami: capture: %w", err)
	}
	defer func() { _ = conn.Close() }()
	for {
		select {
		case _, ok := <-conn.Events():
			if !ok {
				return fmt.Errorf("ami: capture: %w", conn.Err())
			}
		case <-ctx.Done():
			return captureLogoff(conn)
		}
	}
}

// captureLogoff sends Logoff and waits (at most 2 s) until the PBX closed the connection, so its
// Goodbye is in the capture, draining events meanwhile.
func captureLogoff(conn *Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- conn.Logoff(ctx) }()
	var logoffErr error
	events := conn.Events()
	for events != nil || errc != nil {
		select {
		case _, ok := <-events:
			if !ok {
				events = nil // the PBX closed the connection after its Goodbye
			}
		case err := <-errc:
			errc = nil
			if err != nil && !errors.Is(err, ErrConnectionLost) {
				logoffErr = fmt.Errorf("ami: capture: logoff: %w", err)
			}
		case <-ctx.Done():
			_ = conn.Close() // unblocks Logoff; Close waits for the reader
			if errc != nil { // Logoff returns once the connection is closed
				if err := <-errc; err != nil && logoffErr == nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrConnectionLost) {
					logoffErr = fmt.Errorf("ami: capture: logoff: %w", err)
				}
			}
			return logoffErr
		}
	}
	return logoffErr
}
