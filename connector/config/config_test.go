package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/config"
	fakeadapter "github.com/pbxbridge/pbxbridge/crm/fake"
)

const good = `
state_dir: /tmp/pbxbridge
pbx:
  - name: main
    ami:
      host: 127.0.0.1
      username: pbxbridge
      secret: s3cret
connectors:
  - name: test-crm
    type: fake
    directions: [inbound]
    exclude:
      numbers: ["/^\\+7800/"]
    fake:
      latency: 10ms
`

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseGood(t *testing.T) {
	cfg, err := config.Parse([]byte(good), "good.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.PBX[0].AMI.Secret.Value(); got != "s3cret" {
		t.Errorf("secret = %q", got)
	}
	if cfg.PBX[0].AMI.Auth != "md5" || cfg.PBX[0].Type != "ami" {
		t.Errorf("pbx defaults not applied: %+v", cfg.PBX[0])
	}
	if got := cfg.Connectors[0].PBX; len(got) != 1 || got[0] != "main" {
		t.Errorf("connector pbx default = %v, want [main]", got)
	}
	fc, ok := cfg.Connectors[0].Settings.(*fakeadapter.Config)
	if !ok || fc.Latency != 10*time.Millisecond {
		t.Fatalf("type block not decoded: %#v", cfg.Connectors[0].Settings)
	}
	if cfg.Admin.Socket != "/tmp/pbxbridge/admin.sock" {
		t.Errorf("admin socket = %q", cfg.Admin.Socket)
	}
}

func TestUnknownKeys(t *testing.T) {
	in := strings.Replace(good, "      host: 127.0.0.1", "      hots: 127.0.0.1", 1) + "bogus: 1\n"
	_, err := config.Parse([]byte(in), "bad.yaml", nil)
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"bad.yaml:6: pbx[0].ami.hots: unknown key (did you mean \"host\"?)",
		"bad.yaml:17: bogus: unknown key",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
}

func TestAllProblemsReported(t *testing.T) {
	in := `
state_dir: /tmp/x
log: {level: loud}
dispatch: {workers: many, backoff_min: soon}
pbx:
  - name: Main PBX
    type: sip
connectors:
  - name: a
    type: fake
    fake: {fail_rate: 2, unknown_knob: 1}
    directions: [sideways]
    pbx: [nowhere]
  - name: a
    type: nosuch
`
	_, err := config.Parse([]byte(in), "c.yaml", nil)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		"c.yaml:3: log.level: must be debug, info, warn or error, got \"loud\"",
		"c.yaml:4: dispatch.workers: invalid value \"many\": want a whole number",
		"c.yaml:4: dispatch.backoff_min: invalid value \"soon\": want a duration",
		"c.yaml:6: pbx[0].name: must be a short lowercase name",
		"c.yaml:7: pbx[0].type: must be ami or ari, got \"sip\"",
		"c.yaml:11: connectors[0].fake.fail_rate: must be between 0 and 1, got 2",
		"c.yaml:11: connectors[0].fake.unknown_knob: unknown key",
		"c.yaml:12: connectors[0].directions[0]: must be inbound, outbound or internal",
		"c.yaml:13: connectors[0].pbx[0]: no pbx named \"nowhere\"",
		"c.yaml:14: connectors[1].name: duplicate connector name \"a\"",
		"c.yaml:15: connectors[1].type: unknown connector type \"nosuch\"",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	var ps config.Problems
	if errors.As(err, &ps); len(ps) < 11 {
		t.Errorf("got %d problems, want at least 11", len(ps))
	}
}

func TestWrongShapes(t *testing.T) {
	tests := map[string]string{
		"pbx: {name: x}\n":               "pbx: must be a list",
		"log: [a]\n":                     "log: must be a mapping",
		"state_dir: [a]\n":               "state_dir: must be a single value",
		"log:\n  level: a\n  level: b\n": "f.yaml:3: not valid YAML: [3:3] mapping key \"level\" already defined",
		"a: &x 1\nb: *x\n":               "a: unknown key",
		"state_dir: \"unterminated\n":    "not valid YAML",
	}
	for in, want := range tests {
		_, err := config.Parse([]byte(in), "f.yaml", nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want it to contain %q", in, err, want)
		}
	}
}

func TestSecretsFromEnvAndRedaction(t *testing.T) {
	in := strings.Replace(good, "      secret: s3cret\n", "", 1)
	_, err := config.Parse([]byte(in), "f.yaml", nil)
	if err == nil || !strings.Contains(err.Error(), "pbx[0].ami.secret: must be set (in the file or in PBXBRIDGE_PBX_MAIN_AMI_SECRET)") {
		t.Fatalf("missing secret not reported with its variable: %v", err)
	}
	cfg, err := config.Parse([]byte(in), "f.yaml", env(map[string]string{"PBXBRIDGE_PBX_MAIN_AMI_SECRET": "from-env"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PBX[0].AMI.Secret.Value() != "from-env" {
		t.Fatal("secret not taken from the environment")
	}
	// The environment wins over the file.
	cfg, err = config.Parse([]byte(good), "f.yaml", env(map[string]string{"PBXBRIDGE_PBX_MAIN_AMI_SECRET": "env"}))
	if err != nil || cfg.PBX[0].AMI.Secret.Value() != "env" {
		t.Fatalf("env did not override the file: %v", err)
	}
	// Secrets never print.
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("cfg", "ami", cfg.PBX[0].AMI)
	js, _ := json.Marshal(cfg)
	for _, out := range []string{fmt.Sprintf("%v %+v %#v", cfg, cfg.PBX[0].AMI, cfg.PBX[0].AMI), sb.String(), string(js)} {
		if strings.Contains(out, "env") && !strings.Contains(out, "<redacted>") || strings.Contains(out, "=env") || strings.Contains(out, `"env"`) {
			t.Errorf("secret leaked: %s", out)
		}
	}
}

// An empty file (or one with neither pbx nor connectors) is not a config the daemon can run on:
// at 1bda728 `config check` said "OK (0 pbx, 0 connectors)" and `run` logged "ready: every PBX
// connected". Tools that need only the call recognition (replay) still accept it.
func TestEmptyConfigRefused(t *testing.T) {
	t.Parallel()
	for _, yaml := range []string{"", "log: {level: info}\n"} {
		_, err := config.Parse([]byte(yaml), "empty.yaml", nil)
		if err == nil || !strings.Contains(err.Error(), "pbx: no PBX is configured") || !strings.Contains(err.Error(), "connectors: no connector is configured") {
			t.Errorf("%q: %v", yaml, err)
		}
		if _, err := config.Parse([]byte(yaml), "empty.yaml", nil, config.ForTools()); err != nil {
			t.Errorf("%q for tools: %v", yaml, err)
		}
	}
}

// http.admin.language is auto by default, ru or en; anything else names the key and its line.
func TestAdminLanguage(t *testing.T) {
	t.Parallel()
	if l := config.Default().HTTP.Admin.Language; l != config.LanguageAuto {
		t.Errorf("default language %q, want auto", l)
	}
	cfg, err := config.Parse([]byte(good+"http:\n  admin: {language: ru}\n"), "c.yaml", nil)
	if err != nil || cfg.HTTP.Admin.Language != config.LanguageRussian {
		t.Fatalf("language ru: %v, %+v", err, cfg)
	}
	_, err = config.Parse([]byte(good+"http:\n  admin:\n    language: fr\n"), "c.yaml", nil)
	if err == nil || !strings.Contains(err.Error(), `c.yaml:19: http.admin.language: must be auto, ru or en, got "fr"`) {
		t.Fatalf("language fr: %v", err)
	}
}

// TestPrivacyDefaults: retention of dead letters, automatic backups and expiring recording links
// are on by default.
func TestPrivacyDefaults(t *testing.T) {
	cfg, err := config.Parse([]byte(good), "good.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Outbox.DeadLetterRetentionDays != 90 {
		t.Errorf("outbox.dead_letter_retention_days = %d, want 90", cfg.Outbox.DeadLetterRetentionDays)
	}
	if b := cfg.Backup; b.Interval != 24*time.Hour || b.Keep != 7 || b.Dir != "/tmp/pbxbridge/backups" {
		t.Errorf("backup = %+v, want every 24h, 7 kept, in <state_dir>/backups", b)
	}
	if cfg.Recordings.Expiry != 7*24*time.Hour {
		t.Errorf("recordings.expiry = %v, want 7 days", cfg.Recordings.Expiry)
	}
	off, err := config.Parse([]byte(good+"backup: {interval: 0s}\nrecordings: {expiry: 0s}\n"), "off.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if off.Backup.Interval != 0 || off.Recordings.Expiry != 0 {
		t.Errorf("explicit 0s: backup.interval %v, recordings.expiry %v", off.Backup.Interval, off.Recordings.Expiry)
	}
}

func TestPrivacyProblems(t *testing.T) {
	in := good + "outbox: {dead_letter_retention_days: 0}\nbackup: {interval: 10s, keep: 0, dir: backups}\n"
	_, err := config.Parse([]byte(in), "bad.yaml", nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"outbox.dead_letter_retention_days", "backup.interval", "backup.keep", "backup.dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %s:\n%v", want, err)
		}
	}
}

func TestCDR(t *testing.T) {
	pbx := `
state_dir: /tmp/pbxbridge
pbx:
  - name: main
    ami: {host: 127.0.0.1, username: u, secret: s}
    cdr:
`
	// A Master.csv with defaults.
	cfg, err := config.Parse([]byte(pbx+"      csv: {loguniqueid: true, timezone: Europe/Moscow}\n"), "f.yaml", nil, config.ForTools())
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.PBX[0].CDR
	if c == nil || c.CSV == nil || c.MySQL != nil || c.CSV.Path != "/var/log/asterisk/cdr-csv/Master.csv" ||
		c.Delay != 10*time.Second || c.MaxGap != 24*time.Hour || c.CSV.MaxCallAge != 24*time.Hour {
		t.Fatalf("defaults: %+v %+v", c, c.CSV)
	}
	if loc := config.Location(c.CSV.Timezone); loc.String() != "Europe/Moscow" {
		t.Fatalf("location %v", loc)
	}
	if cfg.PBX[0].CDR == nil || config.Location("") != time.Local {
		t.Fatal("the local zone is the default")
	}
	// FreePBX's table, the DSN from the environment.
	in := pbx + "      mysql: {table: asteriskcdrdb.cdr}\n      delay: 30s\n"
	cfg, err = config.Parse([]byte(in), "f.yaml", env(map[string]string{
		"PBXBRIDGE_PBX_MAIN_CDR_MYSQL_DSN": "cdrreader:pw@unix(/run/mysqld/mysqld.sock)/asteriskcdrdb"}), config.ForTools())
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.PBX[0].CDR.MySQL; m.DSN.Value() == "" || m.Table != "asteriskcdrdb.cdr" || m.QueryTimeout != 10*time.Second ||
		cfg.PBX[0].CDR.Delay != 30*time.Second {
		t.Fatalf("mysql: %+v", m)
	}
	if js, _ := json.Marshal(cfg.PBX[0].CDR); strings.Contains(string(js), "pw@") {
		t.Fatalf("the DSN leaked: %s", js)
	}

	// Every problem, with its line.
	for in, want := range map[string]string{
		pbx + "      delay: 5s\n": "f.yaml:7: pbx[0].cdr: needs a csv block",
		pbx + "      csv: {loguniqueid: true}\n      mysql: {dsn: a@/b}\n": "f.yaml:7: pbx[0].cdr: has both csv and mysql",
		pbx + "      csv: {path: Master.csv, loguniqueid: true}\n":         "f.yaml:7: pbx[0].cdr.csv.path: must be an absolute path",
		pbx + "      csv: {}\n": "pbx[0].cdr.csv.loguniqueid: must be true",
		pbx + "      csv: {loguniqueid: true, timezone: Mars/Olympus}\n":         "f.yaml:7: pbx[0].cdr.csv.timezone: unknown time zone \"Mars/Olympus\"",
		pbx + "      csv: {loguniqueid: true, usegmtime: true, timezone: UTC}\n": "pbx[0].cdr.csv.timezone: must be empty with usegmtime",
		pbx + "      csv: {loguniqueid: true, max_call_age: 1s}\n":               "pbx[0].cdr.csv.max_call_age: must be at least 1m",
		pbx + "      csv: {loguniqueid: true, colour: red}\n":                    "f.yaml:7: pbx[0].cdr.csv.colour: unknown key",
		pbx + "      mysql: {table: cdr}\n":                                      "pbx[0].cdr.mysql.dsn: must be set (in the file or in PBXBRIDGE_PBX_MAIN_CDR_MYSQL_DSN)",
		pbx + "      mysql: {dsn: 'a@tcp(h)/db', table: 'cdr; drop'}\n":          "pbx[0].cdr.mysql: table \"cdr; drop\"",
		pbx + "      mysql: {dsn: 'not a dsn'}\n":                                "pbx[0].cdr.mysql: dsn:",
		pbx + "      mysql: {dsn: 'a@/db', query_timeout: 1h}\n":                 "pbx[0].cdr.mysql.query_timeout: must be between 100ms and 5m",
		pbx + "      csv: {loguniqueid: true}\n      delay: 1h\n":                "f.yaml:8: pbx[0].cdr.delay: must be between 0s and 10m",
		pbx + "      csv: {loguniqueid: true}\n      max_gap: 1s\n":              "f.yaml:8: pbx[0].cdr.max_gap: must be at least 1m",
	} {
		_, err := config.Parse([]byte(in), "f.yaml", nil, config.ForTools())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\nerr = %v\nwant %q", in, err, want)
		}
	}
}
