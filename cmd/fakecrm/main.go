// Command fakecrm serves the fake CRM servers of crm/fakecrm (Bitrix24, amoCRM, Kommo) on
// loopback addresses, for demos, scripts and end-to-end tests. Each fake exposes what it received
// at GET /_fake/state.
//
//	go run ./cmd/fakecrm --bitrix24 127.0.0.1:8801 --amocrm 127.0.0.1:8802 --kommo 127.0.0.1:8803
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"
)

// kind is one fake CRM this command can serve; each is added by a file of this package.
type kind struct {
	name    string
	usage   string
	handler func(baseURL string, log *slog.Logger) (http.Handler, error)
	// tls, when set, may return a TLS configuration to serve the fake over HTTPS (nil: http).
	tls func(log *slog.Logger) (*tls.Config, error)
}

// kinds is filled by the init functions of this package's files (one per CRM).
var kinds []kind

func main() {
	os.Exit(run())
}

func run() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fs := flag.NewFlagSet("fakecrm", flag.ContinueOnError)
	sort.Slice(kinds, func(i, j int) bool { return kinds[i].name < kinds[j].name })
	addrs := make([]*string, len(kinds))
	for i, k := range kinds {
		addrs[i] = fs.String(k.name, "", k.usage+" (listen address, e.g. 127.0.0.1:8801)")
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var servers []*http.Server
	for i, k := range kinds {
		if *addrs[i] == "" {
			continue
		}
		ln, err := net.Listen("tcp", *addrs[i])
		if err != nil {
			log.Error("listen", "crm", k.name, "err", err)
			return 1
		}
		base := "http://" + ln.Addr().String()
		if k.tls != nil {
			tc, err := k.tls(log.With("crm", k.name))
			if err != nil {
				_ = ln.Close()
				log.Error("tls", "crm", k.name, "err", err)
				return 1
			}
			if tc != nil {
				ln = tls.NewListener(ln, tc)
				base = "https://" + ln.Addr().String()
			}
		}
		h, err := k.handler(base, log.With("crm", k.name))
		if err != nil {
			log.Error("starting fake", "crm", k.name, "err", err)
			return 1
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		fmt.Printf("fake %s listening on %s (state: %s/_fake/state)\n", k.name, base, base)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("serve", "crm", k.name, "err", err)
				stop()
			}
		}()
	}
	if len(servers) == 0 {
		fs.Usage()
		return 2
	}
	<-ctx.Done()
	shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shCtx)
	}
	return 0
}
