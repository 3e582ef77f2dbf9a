package main

import (
	"log/slog"
	"net/http"

	"github.com/pbxbridge/pbxbridge/crm/crmtest"
)

// The fake amoCRM and Kommo: the demo account "romashka" (crmtest.AmoDemoAccount), OAuth client
// crmtest.DemoClientID / DemoClientSecret, long-lived token crmtest.DemoLongLivedToken.
// GET /oauth?client_id=…&redirect_uri=…&state=… plays the consent page; GET /_fake/code issues
// a code for `pbxbridge crm auth amocrm --code`; POST /_fake/fault?fault=… injects faults.
func init() {
	kinds = append(kinds,
		kind{name: "amocrm", usage: "serve a fake amoCRM (rate limit 7 req/s, OAuth, calls, contacts, tasks, pop-ups)",
			handler: func(_ string, _ *slog.Logger) (http.Handler, error) {
				return crmtest.NewAmoDemo(crmtest.AmoOptions{Flavor: "amocrm"}), nil
			}},
		kind{name: "kommo", usage: "serve a fake Kommo (amoCRM's international twin)",
			handler: func(_ string, _ *slog.Logger) (http.Handler, error) {
				return crmtest.NewAmoDemo(crmtest.AmoOptions{Flavor: "kommo"}), nil
			}},
	)
}
