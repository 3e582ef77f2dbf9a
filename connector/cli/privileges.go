package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/pbxbridge/pbxbridge/connector/config"
)

// Running admin commands as root.
//
// Administrators run pbxbridge with sudo. A command that writes the daemon's state directory as
// root leaves root-owned files and folders there (connectors/<name>, OAuth tokens) that the
// service user cannot use: the daemon then fails to start a connector or never sees the new
// tokens. So, when the process is root, the commands that touch the state directory first become
// the owner of that directory (its uid, its gid and that user's supplementary groups, for the
// whole process), and say so in one line on stderr; what they write then belongs to the service
// and their checks (doctor) see exactly what the service can reach.
//
// The licence commands stay root: they must write the licence directory under /etc, and
// licensing gives what it writes in the state directory to that directory's owner itself
// (licensing/internal/owner). outbox import and the other daemon clients go through the admin
// socket and touch no state.

const (
	// ServiceUser is the system user the package creates and the unit runs the daemon as.
	ServiceUser = "pbxbridge"
	// ServiceEnvFile is the unit's EnvironmentFile: the secrets the service sees.
	ServiceEnvFile = "/etc/default/pbxbridge"
)

// stateCommands are the commands (kong paths without arguments) that run as the owner of the
// state directory when started as root.
var stateCommands = map[string]bool{
	"run":      true,
	"doctor":   true,
	"crm test": true,
	"crm auth": true,
}

// stateDirCommands create the state directory (for the service user) when it is missing but
// keep running as root.
var stateDirCommands = map[string]bool{
	"license request":     true,
	"license fingerprint": true,
	"license install":     true,
}

// commandPath is the selected command without its arguments, e.g. "crm test".
func commandPath(kctx *kong.Context) string {
	var names []string
	for n := kctx.Selected(); n != nil && n.Type == kong.CommandNode; n = n.Parent {
		names = append([]string{n.Name}, names...)
	}
	return strings.Join(names, " ")
}

// asService runs before the selected command. As root it loads the service's environment file
// (when the config is the packaged one), creates a missing state directory for the service user
// and, for the commands that touch the state, becomes the state directory's owner. It does
// nothing for other users.
func asService(g *Globals, kctx *kong.Context) error {
	if os.Geteuid() != 0 {
		return nil
	}
	note := func(format string, args ...any) { fmt.Fprintf(g.Stderr, "pbxbridge: "+format+"\n", args...) }
	cmd := commandPath(kctx)
	if g.ConfigFile == "" || filepath.Clean(g.ConfigFile) == config.DefaultPath {
		if err := loadEnvFile(ServiceEnvFile, os.Getenv, os.Setenv); err != nil {
			return err
		}
	}
	if !stateCommands[cmd] && !stateDirCommands[cmd] {
		return nil
	}
	cfg, err := g.optionalConfig()
	if err != nil {
		return nil //nolint:nilerr // the command reports the config's problems itself
	}
	stateDir := cfg.StateDir
	created, err := ensureStateDir(stateDir, ServiceUser)
	if err != nil {
		return err
	}
	if created {
		note("created %s for the %s user", stateDir, ServiceUser)
	}
	if !stateCommands[cmd] {
		return nil
	}
	u, err := stateOwner(stateDir)
	if err != nil || u == nil {
		return err
	}
	if err := becomeUser(u); err != nil {
		return fmt.Errorf("running as %s, the owner of %s: %w (run the command as that user: sudo -u %s pbxbridge …)", u.Username, stateDir, err, u.Username)
	}
	note("running as %s (owner of %s), so that the service can use what this command writes", u.Username, stateDir)
	return nil
}

// ensureStateDir creates a missing state directory (0700, parents 0755) owned by serviceUser
// when that user exists; root keeps it when the user does not (a machine without the package).
// It reports whether it created the directory.
func ensureStateDir(dir, serviceUser string) (bool, error) {
	if _, err := os.Stat(dir); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("state directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil { //nolint:gosec // /var/lib and the like
		return false, fmt.Errorf("state directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); errors.Is(err, fs.ErrExist) {
		return false, nil // created meanwhile
	} else if err != nil {
		return false, fmt.Errorf("state directory: %w", err)
	}
	u, err := user.Lookup(serviceUser)
	if err != nil {
		return true, nil //nolint:nilerr // no service user: the directory stays root's
	}
	uid, gid, err := ids(u)
	if err != nil {
		return true, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return true, fmt.Errorf("state directory: giving %s to %s: %w", dir, serviceUser, err)
	}
	return true, nil
}

// stateOwner returns the user owning dir when it is not root; nil when root owns it or it does
// not exist (the command then runs as root, as on a development machine).
func stateOwner(dir string) (*user.User, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	uid, ok := fileUID(st)
	if !ok || uid == 0 {
		return nil, nil
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil, fmt.Errorf("state directory %s belongs to uid %d, which has no user: %w (chown it to the service user)", dir, uid, err)
	}
	return u, nil
}

// ids returns a user's numeric uid and gid.
func ids(u *user.User) (uid, gid int, err error) {
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("user %s: uid %q: %w", u.Username, u.Uid, err)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("user %s: gid %q: %w", u.Username, u.Gid, err)
	}
	return uid, gid, nil
}

// groupIDs returns the numeric ids of u's groups, its primary group included.
func groupIDs(u *user.User) ([]int, error) {
	names, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", u.Username, err)
	}
	out := make([]int, 0, len(names))
	for _, n := range names {
		id, err := strconv.Atoi(n)
		if err != nil {
			return nil, fmt.Errorf("groups of %s: %q: %w", u.Username, n, err)
		}
		out = append(out, id)
	}
	return out, nil
}

// loadEnvFile sets the variables of a systemd EnvironmentFile that the environment does not set
// already (what the caller exported wins). A missing file is fine. It understands the common
// subset of the format: KEY=VALUE lines, # and ; comments, values in single or double quotes
// (backslash escapes inside double quotes), and trailing-backslash continuations.
func loadEnvFile(path string, getenv func(string) string, setenv func(string, string) error) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the service environment: %w", err)
	}
	vars, err := parseEnvFile(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, kv := range vars {
		if getenv(kv[0]) != "" {
			continue
		}
		if err := setenv(kv[0], kv[1]); err != nil {
			return fmt.Errorf("%s: %s: %w", path, kv[0], err)
		}
	}
	return nil
}

// parseEnvFile parses an EnvironmentFile into KEY, VALUE pairs in file order.
func parseEnvFile(data []byte) ([][2]string, error) {
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	lineNo, logical := 0, ""
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if strings.HasSuffix(line, `\`) {
			logical += strings.TrimSuffix(line, `\`)
			continue
		}
		line, logical = logical+line, ""
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(strings.TrimPrefix(key, "export "))
		if !ok || !validEnvName(key) {
			return nil, fmt.Errorf("line %d: want NAME=VALUE", lineNo)
		}
		v, err := unquoteEnv(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", lineNo, key, err)
		}
		out = append(out, [2]string{key, v})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func validEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range s {
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func unquoteEnv(v string) (string, error) {
	if len(v) < 2 || (v[0] != '"' && v[0] != '\'') {
		return v, nil
	}
	q := v[0]
	if v[len(v)-1] != q {
		return "", errors.New("unterminated quote")
	}
	body := v[1 : len(v)-1]
	if q == '\'' {
		return body, nil
	}
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		if body[i] == '\\' && i+1 < len(body) {
			i++
		}
		b.WriteByte(body[i])
	}
	return b.String(), nil
}

// accessChecks are doctor's checks of what this process (the service user, once asService has
// switched to it) can reach: who it runs as, entries of the state directory owned by someone
// else (left by a root command of an older version), and the licence files.
func accessChecks(cfg *config.Config) []doctorLine {
	var out []doctorLine
	uid := os.Geteuid()
	who := strconv.Itoa(uid)
	if u, err := user.LookupId(who); err == nil {
		who = u.Username
	}
	if uid == 0 {
		if u, err := user.Lookup(ServiceUser); err == nil {
			out = append(out, doctorLine{name: "service user", detail: fmt.Sprintf("%s belongs to root, but the service runs as %s and cannot write it: chown -R %s:%s %s",
				cfg.StateDir, u.Username, u.Username, u.Username, cfg.StateDir)})
		} else {
			out = append(out, doctorLine{ok: true, warn: true, name: "service user",
				detail: "checks run as root (no " + ServiceUser + " user here): they do not show what an unprivileged service can reach"})
		}
	} else {
		out = append(out, doctorLine{ok: true, name: "service user", detail: fmt.Sprintf("checks run as %s, the owner of %s", who, cfg.StateDir)})
		if foreign := foreignEntries(cfg.StateDir, uid, 5); len(foreign) > 0 {
			out = append(out, doctorLine{name: "state ownership", detail: fmt.Sprintf("%s cannot use these (left by a command run as root?): %s\nfix: chown -R %s: %s",
				who, strings.Join(foreign, ", "), who, cfg.StateDir)})
		}
	}
	files, _ := filepath.Glob(filepath.Join(cfg.Licensing.Dir, "*.lic"))
	var unreadable []string
	for _, f := range files {
		if fh, err := os.Open(f); err != nil {
			unreadable = append(unreadable, filepath.Base(f))
		} else {
			_ = fh.Close()
		}
	}
	switch {
	case len(unreadable) > 0:
		out = append(out, doctorLine{name: "licence files", detail: fmt.Sprintf("%s cannot read %s in %s: chmod 0644 them (the directory: root:%s 0750)",
			who, strings.Join(unreadable, ", "), cfg.Licensing.Dir, ServiceUser)})
	case len(files) > 0:
		out = append(out, doctorLine{ok: true, name: "licence files", detail: fmt.Sprintf("%d readable by %s in %s", len(files), who, cfg.Licensing.Dir)})
	default:
		if _, err := os.ReadDir(cfg.Licensing.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			out = append(out, doctorLine{name: "licence files", detail: fmt.Sprintf("%s cannot read %s: %v", who, cfg.Licensing.Dir, err)})
		}
	}
	return out
}

// foreignEntries lists (up to limit) the entries under dir that uid does not own, dir included;
// a directory it cannot read counts too.
func foreignEntries(dir string, uid, limit int) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if len(out) >= limit {
			return filepath.SkipAll
		}
		if err != nil {
			out = append(out, p)
			return nil //nolint:nilerr // an unreadable folder is a finding, not a failure
		}
		if info, err := d.Info(); err == nil {
			if owner, ok := fileUID(info); ok && owner != uid {
				out = append(out, p)
				if d.IsDir() {
					return filepath.SkipDir
				}
			}
		}
		return nil
	})
	return out
}
