package main

import (
	"log/slog"
	"net/http"
	"os"

	"github.com/pbxbridge/pbxbridge/crm/fakecrm"
)

// The fake amoCRM and Kommo: the demo account "romashka" (fakecrm.AmoDemoAccount; another
// subdomain from FAKECRM_AMOCRM_SUBDOMAIN, e.g. for a config that must not look like the
// sample's), OAuth client fakecrm.DemoClientID / DemoClientSecret, long-lived token
// fakecrm.DemoLongLivedToken.
// GET /oauth?client_id=…&redirect_uri=…&state=… plays the consent page; GET /_fake/code issues
// a code for `pbxbridge crm auth amocrm --code`; POST /_fake/fault?fault=… injects faults.
func init() {
	kinds = append(kinds,
		kind{name: "amocrm", usage: "serve a fake amoCRM (rate limit 7 req/s, OAuth, calls, contacts, tasks, pop-ups)",
			handler: func(_ string, _ *slog.Logger) (http.Handler, error) {
				return amoDemo("amocrm"), nil
			}},
		kind{name: "kommo", usage: "serve a fake Kommo (amoCRM's international twin)",
			handler: func(_ string, _ *slog.Logger) (http.Handler, error) {
				return amoDemo("kommo"), nil
			}},
	)
}

// amoDemo is the demo account of a flavour, under FAKECRM_AMOCRM_SUBDOMAIN when it is set.
func amoDemo(flavor string) http.Handler {
	sub := os.Getenv("FAKECRM_AMOCRM_SUBDOMAIN")
	if sub == "" {
		return fakecrm.NewAmoDemo(fakecrm.AmoOptions{Flavor: flavor})
	}
	f := fakecrm.NewAmoCRM(fakecrm.AmoOptions{Flavor: flavor})
	acct := fakecrm.AmoDemoAccount()
	acct.Subdomain = sub
	f.AddAccount(acct)
	f.AddLongLivedToken(sub, fakecrm.DemoLongLivedToken, fakecrm.DemoLongLivedTTL)
	return f
}
