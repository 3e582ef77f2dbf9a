package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The fake Bitrix24 portal + OAuth server. Knobs come from the environment at start
// (FAKECRM_BITRIX24_CLIENT_ID, _CLIENT_SECRET, _RPS, _BURST, _LATENCY, _FAIL_RATE, _TOKEN_TTL,
// _REUSE_CALL_ID=1, _WEBHOOK=<user id>/<code>, _REDIRECT_URI) and can be changed at run time with
// POST /_fake/faults (JSON, see fakecrm.B24Faults). POST /_fake/install?url=..., /_fake/click2call
// ?user_id=&phone=&line= and /_fake/callback?phone=&line=&text= emit Bitrix24 events.
func init() {
	kinds = append(kinds, kind{
		name:  "bitrix24",
		usage: "serve a fake Bitrix24 portal and OAuth server",
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
	return opts, nil
}
