package main

import (
	"log/slog"
	"net/http"

	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The fake amoCRM and Kommo: the demo account "romashka" (fakecrm.AmoDemoAccount), OAuth client
// fakecrm.DemoClientID / DemoClientSecret, long-lived token fakecrm.DemoLongLivedToken.
// GET /oauth?client_id=…&redirect_uri=…&state=… plays the consent page; GET /_fake/code issues
// a code for `pbxbridge crm auth amocrm --code`; POST /_fake/fault?fault=… injects faults.
func init() {
	kinds = append(kinds,
		kind{name: "amocrm", usage: "serve a fake amoCRM (rate limit 7 req/s, OAuth, calls, contacts, tasks, pop-ups)",
			handler: func(_ string, _ *slog.Logger) (http.Handler, error) {
				return fakecrm.NewAmoDemo(fakecrm.AmoOptions{Flavor: "amocrm"}), nil
			}},
		kind{name: "kommo", usage: "serve a fake Kommo (amoCRM's international twin)",
			handler: func(_ string, _ *slog.Logger) (http.Handler, error) {
				return fakecrm.NewAmoDemo(fakecrm.AmoOptions{Flavor: "kommo"}), nil
			}},
	)
}
