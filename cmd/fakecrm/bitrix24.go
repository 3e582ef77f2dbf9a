package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The fake Bitrix24 portal + OAuth server. Knobs come from the environment at start
// (FAKECRM_BITRIX24_CLIENT_ID, _CLIENT_SECRET, _RPS, _BURST, _LATENCY, _FAIL_RATE, _TOKEN_TTL,
// _REUSE_CALL_ID=1, _WEBHOOK=<user id>/<code>, _REDIRECT_URI) and can be changed at run time with
// POST /_fake/faults (JSON, see fakecrm.B24Faults). POST /_fake/install?url=..., /_fake/click2call
// ?user_id=&phone=&line= and /_fake/callback?phone=&line=&text= emit Bitrix24 events.
//
// A boxed portal (crm/bitrix24/README.md "On-premise (boxed) Bitrix24"): _BOXED=1 (no cloud
// OAuth server, webhooks checked as a box does), _PORTAL_TOKEN and _MODULE_SECRET (the pbxbridge
// portal module; or POST /_fake/module/install?pbxbridge_url= as its settings page does), and
// _TLS_DIR=<dir> to serve HTTPS with a self-signed certificate for _TLS_HOSTS (comma-separated,
// default 127.0.0.1,localhost) written to <dir>/bitrix24-ca.pem (for tls.ca_file).
func init() {
	kinds = append(kinds, kind{
		name:  "bitrix24",
		usage: "serve a fake Bitrix24 portal and OAuth server",
		tls: func(log *slog.Logger) (*tls.Config, error) {
			return bitrix24TLS(os.Getenv, log)
		},
		handler: func(baseURL string, log *slog.Logger) (http.Handler, error) {
			opts, err := bitrix24Options(os.Getenv)
			if err != nil {
				return nil, err
			}
			opts = append(opts, fakecrm.B24Logger(log))
			f := fakecrm.NewBitrix24(opts...)
			f.SetBaseURL(baseURL)
			log.Info("fake bitrix24 application", "client_id", f.ClientID(), "member_id", f.MemberID())
			return f, nil
		},
	})
}

func bitrix24Options(env func(string) string) ([]fakecrm.Bitrix24Option, error) {
	const p = "FAKECRM_BITRIX24_"
	var opts []fakecrm.Bitrix24Option
	if id, secret := env(p+"CLIENT_ID"), env(p+"CLIENT_SECRET"); id != "" || secret != "" {
		if id == "" || secret == "" {
			return nil, fmt.Errorf("%sCLIENT_ID and %sCLIENT_SECRET go together", p, p)
		}
		opts = append(opts, fakecrm.B24App(id, secret))
	}
	if v := env(p + "RPS"); v != "" {
		rps, err := strconv.ParseFloat(v, 64)
		if err != nil || rps < 0 {
			return nil, fmt.Errorf("%sRPS: %q is not a rate", p, v)
		}
		burst := 50
		if b := env(p + "BURST"); b != "" {
			if burst, err = strconv.Atoi(b); err != nil || burst < 1 {
				return nil, fmt.Errorf("%sBURST: %q is not a positive number", p, b)
			}
		}
		opts = append(opts, fakecrm.B24RateLimit(rps, burst))
	}
	for _, d := range []struct {
		name string
		opt  func(time.Duration) fakecrm.Bitrix24Option
	}{{"LATENCY", fakecrm.B24Latency}, {"TOKEN_TTL", fakecrm.B24TokenTTL}} {
		if v := env(p + d.name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("%s%s: %w", p, d.name, err)
			}
			opts = append(opts, d.opt(x))
		}
	}
	if v := env(p + "FAIL_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("%sFAIL_RATE: %q is not between 0 and 1", p, v)
		}
		opts = append(opts, fakecrm.B24FailRate(r))
	}
	if env(p+"REUSE_CALL_ID") == "1" {
		opts = append(opts, fakecrm.B24ReuseCallID(true))
	}
	if v := env(p + "WEBHOOK"); v != "" {
		var uid int
		var code string
		if n, err := fmt.Sscanf(v, "%d/%s", &uid, &code); err != nil || n != 2 {
			return nil, fmt.Errorf("%sWEBHOOK: want <user id>/<code>, got %q", p, v)
		}
		opts = append(opts, fakecrm.B24Webhook(uid, code, "crm,telephony,user,task"))
	}
	if v := env(p + "REDIRECT_URI"); v != "" {
		opts = append(opts, fakecrm.B24RedirectURI(v))
	}
	if env(p+"BOXED") == "1" {
		opts = append(opts, fakecrm.B24Boxed())
	}
	token, secret := env(p+"PORTAL_TOKEN"), env(p+"MODULE_SECRET")
	if (token == "") != (secret == "") {
		return nil, fmt.Errorf("%sPORTAL_TOKEN and %sMODULE_SECRET go together", p, p)
	}
	if token != "" {
		opts = append(opts, fakecrm.B24PortalToken(token), fakecrm.B24ModuleSecret(secret))
	}
	return opts, nil
}

// bitrix24TLS makes the certificate of FAKECRM_BITRIX24_TLS_DIR (nil without it).
func bitrix24TLS(env func(string) string, log *slog.Logger) (*tls.Config, error) {
	const p = "FAKECRM_BITRIX24_"
	dir := env(p + "TLS_DIR")
	if dir == "" {
		return nil, nil
	}
	hosts := []string{"127.0.0.1", "localhost"}
	if v := env(p + "TLS_HOSTS"); v != "" {
		hosts = strings.Split(v, ",")
	}
	cert, certPEM, err := fakecrm.SelfSignedCert(hosts...)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "bitrix24-ca.pem")
	if err := os.WriteFile(path, certPEM, 0o644); err != nil { // a certificate: public by nature
		return nil, fmt.Errorf("%sTLS_DIR: %w", p, err)
	}
	sum := sha256.Sum256(cert.Leaf.Raw)
	log.Info("fake bitrix24 serves HTTPS", "ca_file", path, "hosts", strings.Join(hosts, ","), "sha256", hex.EncodeToString(sum[:]))
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
