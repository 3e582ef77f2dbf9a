package amocrm

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The widget in widget/ speaks the protocol of this package: its version is WidgetVersion, it
// keeps no secret in its settings, it calls only through $authorizedAjax, it sends only entity
// types the server takes, and every text it uses exists in every language.
func TestWidgetMatchesTheServer(t *testing.T) {
	t.Parallel()
	var manifest struct {
		Widget struct {
			Version string   `json:"version"`
			Locale  []string `json:"locale"`
		} `json:"widget"`
		Settings map[string]struct {
			Type string `json:"type"`
		} `json:"settings"`
	}
	readJSON(t, "widget/manifest.json", &manifest)
	if manifest.Widget.Version != WidgetVersion {
		t.Errorf("manifest version %s, WidgetVersion %s", manifest.Widget.Version, WidgetVersion)
	}
	for name, s := range manifest.Settings {
		if s.Type == "pass" || strings.Contains(name, "secret") || strings.Contains(name, "key") {
			t.Errorf("setting %s: widget settings reach every user's browser and must hold no secret", name)
		}
	}
	b, err := os.ReadFile("widget/script.js")
	if err != nil {
		t.Fatal(err)
	}
	script := string(b)
	for _, bad := range []string{"X-Pbxbridge", "crypto.subtle", "$.ajax", "user_id"} {
		if strings.Contains(script, bad) {
			t.Errorf("script.js still uses %s", bad)
		}
	}
	if !strings.Contains(script, "self.$authorizedAjax({") {
		t.Error("script.js does not call through $authorizedAjax")
	}
	for _, et := range entityTypes {
		if !strings.Contains(script, "'"+et+"'") {
			t.Errorf("script.js does not send entity type %s", et)
		}
	}
	used := regexp.MustCompile(`t\('([a-z_]+)\.([a-z_]+)'\)`).FindAllStringSubmatch(script, -1)
	if len(used) == 0 {
		t.Fatal("no texts found in script.js")
	}
	for _, lang := range manifest.Widget.Locale {
		var texts map[string]map[string]string
		readJSON(t, "widget/i18n/"+lang+".json", &texts)
		for _, u := range used {
			if texts[u[1]][u[2]] == "" {
				t.Errorf("i18n/%s.json lacks %s.%s", lang, u[1], u[2])
			}
		}
		for name := range manifest.Settings {
			if texts["settings"][name] == "" {
				t.Errorf("i18n/%s.json lacks settings.%s", lang, name)
			}
		}
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
