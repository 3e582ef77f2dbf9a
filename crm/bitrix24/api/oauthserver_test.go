package api

import (
	"context"
	"errors"
	"testing"
)

func TestOAuthServers(t *testing.T) {
	def := NewOAuthServers("")
	box := NewOAuthServers("https://oauth.box.example.ru:8443/")
	for _, tc := range []struct {
		s        OAuthServers
		endpoint string
		want     string
	}{
		{def, "https://oauth.bitrix24.tech/rest/", "https://oauth.bitrix24.tech"},
		{def, "https://oauth.bitrix.info:443/rest/", "https://oauth.bitrix.info"},
		{def, "https://evil.example.com/rest/", DefaultOAuthServer},
		{def, "https://oauth.bitrix.info.evil.example.com/rest/", DefaultOAuthServer},
		{def, "https://oauth.bitrix.info@evil.example.com/rest/", DefaultOAuthServer},
		{def, "http://oauth.bitrix.info/rest/", DefaultOAuthServer},
		{def, "javascript:alert(1)", DefaultOAuthServer},
		{def, "", DefaultOAuthServer},
		{box, "", "https://oauth.box.example.ru:8443"},
		{box, "https://OAUTH.box.example.ru:8443/rest/", "https://oauth.box.example.ru:8443"},
		{box, "https://oauth.box.example.ru/rest/", "https://oauth.box.example.ru:8443"}, // another port: not allowed
		{box, "https://oauth.bitrix24.tech/rest/", "https://oauth.bitrix24.tech"},
		{OAuthServers{}, "https://oauth.bitrix.info/rest/", DefaultOAuthServer},
	} {
		if got := tc.s.For(tc.endpoint); got != tc.want {
			t.Errorf("%+v.For(%q) = %q, want %q", tc.s, tc.endpoint, got, tc.want)
		}
	}
}

func TestPortalToken(t *testing.T) {
	p, err := NewPortalToken("https://b24.example.ru:8443/", " pbx.token ")
	if err != nil {
		t.Fatal(err)
	}
	base, tok, err := p.Endpoint(context.Background())
	if err != nil || base != "https://b24.example.ru:8443/rest/" || tok != "pbx.token" || p.Domain() != "b24.example.ru:8443" {
		t.Fatalf("%q %q %v %q", base, tok, err, p.Domain())
	}
	if err := p.Refresh(context.Background(), tok); !errors.Is(err, ErrPortalTokenRejected) {
		t.Fatalf("refresh: %v", err)
	}
	for _, bad := range [][2]string{{"b24.example.ru", "x"}, {"https://b24.example.ru", ""}, {"https://b24.example.ru", "a b"}} {
		if _, err := NewPortalToken(bad[0], bad[1]); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
