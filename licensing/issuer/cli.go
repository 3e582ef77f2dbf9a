package issuer

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing"
	"github.com/pbxbridge/pbxbridge/licensing/keyring"
	"github.com/pbxbridge/pbxbridge/licensing/licensecli"
)

// CLI is the pbxbridge-issuer command tree (kong). Bind a *Env.
type CLI struct {
	Key      KeyCmd                `cmd:"" help:"Signing keys."`
	Issue    IssueCmd              `cmd:"" help:"Issue a licence."`
	Renew    RenewCmd              `cmd:"" help:"Renew a licence: same lid and rev, the next term starts the day after the previous end."`
	Transfer TransferCmd           `cmd:"" help:"Transfer (resale) a licence: rev+1, new licensee and binding, same end."`
	Revoke   RevokeCmd             `cmd:"" help:"Build a signed revocation list."`
	Inspect  licensecli.InspectCmd `cmd:"" help:"Print a licence's claims (UNVERIFIED when the signature fails)."`
	Verify   licensecli.VerifyCmd  `cmd:"" help:"Verify a licence as the daemon does (exit codes as pbxbridge license verify)."`
}

// Env is what the issuer commands need; it embeds the licensecli environment so inspect and
// verify work the same as on the daemon side.
type Env = licensecli.Env

func now(env *Env) time.Time {
	if env.Now != nil {
		return env.Now()
	}
	return time.Now()
}

func stdout(env *Env) io.Writer {
	if env.Stdout != nil {
		return env.Stdout
	}
	return os.Stdout
}

// KeyCmd groups key commands.
type KeyCmd struct {
	Gen  KeyGenCmd  `cmd:"" help:"Generate a key: writes DIR/<kid>.key (secret, 0600) and DIR/<kid>.pub."`
	List KeyListCmd `cmd:"" help:"List the keys of a directory and of the compiled keyring."`
}

// KeyGenCmd is `key gen --scope paid|trial|demo|revocation --out DIR`.
type KeyGenCmd struct {
	Scope     string `required:"" enum:"paid,trial,demo,revocation" help:"paid (signs paid and nfr), trial, demo (.invalid CRM accounts only) or revocation."`
	Out       string `required:"" type:"path" help:"Directory for <kid>.key and <kid>.pub."`
	NotBefore string `help:"Start of the issuance window (YYYY-MM-DD, UTC; default today)." placeholder:"YYYY-MM-DD"`
	NotAfter  string `help:"End of the issuance window (YYYY-MM-DD, UTC, inclusive; default five years after the start)." placeholder:"YYYY-MM-DD"`
}

// Run generates the key.
func (c *KeyGenCmd) Run(env *Env) error {
	nb := licensing.DateOf(now(env).UTC())
	var err error
	if c.NotBefore != "" {
		if nb, err = licensing.ParseDate(c.NotBefore); err != nil {
			return fmt.Errorf("--not-before: %w", err)
		}
	}
	na := licensing.Date{Year: nb.Year + 5, Month: nb.Month, Day: min(nb.Day, licensing.DaysIn(nb.Year+5, nb.Month))}
	if c.NotAfter != "" {
		if na, err = licensing.ParseDate(c.NotAfter); err != nil {
			return fmt.Errorf("--not-after: %w", err)
		}
	}
	k, err := GenerateKey(c.Scope, nb.Start(time.UTC), na.AddDays(1).Start(time.UTC).Add(-time.Second))
	if err != nil {
		return err
	}
	keyPath, pubPath, err := k.WriteFiles(c.Out)
	if err != nil {
		return err
	}
	p := &licensecli.Printer{W: stdout(env)}
	p.Printf("kid %s\nscope %s (signs %v), issuance window %s .. %s\nsecret %s (keep offline; never commit)\npublic %s\n",
		k.Key.KID, c.Scope, k.Key.Types, nb, na, keyPath, pubPath)
	return p.Err
}

// KeyListCmd is `key list [DIR]`.
type KeyListCmd struct {
	Dir string `arg:"" optional:"" type:"path" help:"Directory of .pub files."`
}

// Run lists keys.
func (c *KeyListCmd) Run(env *Env) error {
	p := &licensecli.Printer{W: stdout(env)}
	for _, k := range keyring.Release().Keys() {
		p.Printf("release %s %v %s\n", k.KID, k.Types, k.Status)
	}
	if c.Dir == "" {
		return p.Err
	}
	keys, err := keyring.LoadPubDir(c.Dir)
	if err != nil {
		return err
	}
	for _, k := range keys {
		p.Printf("%s %s %v %s window %s..%s\n", c.Dir, k.KID, k.Types, k.Status,
			k.NotBefore.Format(time.DateOnly), k.NotAfter.Format(time.DateOnly))
	}
	return p.Err
}

// bindingFlags are the CRM and host binding flags shared by issue and transfer.
type bindingFlags struct {
	CRM       []string `help:"CRM account binding, repeatable KEY=VALUE: bitrix24_domain, member_id (Bitrix24); account_id, subdomain (amoCRM/Kommo)." sep:"none" placeholder:"KEY=VALUE"`
	Request   []string `help:"Activation request code from 'pbxbridge license request' (repeat for an HA pair)." sep:"none" placeholder:"CODE"`
	NoHost    bool     `help:"Do not bind to a host (contract addendum, containers, demo)."`
	MinMatch  int      `help:"Factors that must match (default: 3, or all if fewer)."`
	MinStable int      `help:"Hardware-tied factors that must match (default: 1 when the request has one)."`
}

// apply sets crm and hosts on c for connector.
func (b *bindingFlags) apply(c *licensing.Claims) error {
	if (len(b.Request) == 0) == !b.NoHost {
		return errors.New("give --request CODE (host-bound) or --no-host")
	}
	crm, err := licensecli.ParseCRM(b.CRM)
	if err != nil {
		return err
	}
	c.Hosts, c.MinMatch, c.MinStable = nil, 0, 0
	for _, code := range b.Request {
		req, err := licensing.DecodeRequest(code)
		if err != nil {
			return err
		}
		if req.Connector != c.Connector {
			return fmt.Errorf("the request is for %s, not %s", req.Connector, c.Connector)
		}
		if crm == nil && req.CRM != nil {
			crm = req.CRM
		}
		c.Hosts = append(c.Hosts, licensing.HostBinding{FPV: req.Host.FPV, F: req.Host.Factors})
	}
	if len(c.Hosts) > 0 {
		fewest := len(c.Hosts[0].F)
		hasStable := true
		for _, h := range c.Hosts {
			fewest = min(fewest, len(h.F))
			if h.F[licensing.FactorDMI] == "" && h.F[licensing.FactorMAC] == "" {
				hasStable = false
			}
		}
		c.MinMatch = b.MinMatch
		if c.MinMatch == 0 {
			c.MinMatch = min(licensing.DefaultMinMatch, fewest)
		}
		c.MinStable = b.MinStable
		if c.MinStable == 0 && hasStable {
			c.MinStable = licensing.DefaultMinStable
		}
		if c.MinMatch > fewest {
			return fmt.Errorf("--min-match %d exceeds the %d factors of a request", c.MinMatch, fewest)
		}
	}
	c.CRM = crm
	return nil
}

// IssueCmd is `issue`.
type IssueCmd struct {
	Key       string `required:"" type:"existingfile" help:"Signing key (<kid>.key)."`
	Type      string `enum:"auto,paid,nfr,trial,demo" default:"auto" help:"Token type (default: the key's first type)."`
	Connector string `required:"" help:"Connector type the licence enables (bitrix24, amocrm, kommo)."`
	Licensee  string `required:"" help:"Customer name (no e-mail or phone numbers)."`
	Sub       string `required:"" help:"Customer id."`
	LID       string `name:"lid" help:"Licence id (default: generated L-YYYY-xxxxxxxx)."`
	Rev       int    `default:"1" help:"Revision."`
	Seats     string `help:"Seat limits: N (extensions) or extensions=N,crm_users=M (default unlimited)."`
	Overage   string `default:"0.10:72" help:"Tolerated overage RATIO:HOURS before suspension of the excess."`
	Start     string `required:"" help:"First day of the term (YYYY-MM-DD)." placeholder:"YYYY-MM-DD"`
	Months    int    `help:"Term in calendar months."`
	Days      int    `help:"Term in days (trials: at most 14)."`
	GraceDays int    `default:"-1" help:"Days of grace after the end (default 6: 'fewer than 7 days late'; trials and demos 0)."`
	TZ        string `name:"tz" default:"UTC" help:"Zone of the term dates (IANA name)."`
	bindingFlags
	MinVersion string `help:"Oldest daemon version allowed (MAJOR.MINOR.PATCH)."`
	Out        string `help:"Output file (- for stdout)." placeholder:"FILE"`
	DryRun     bool   `help:"Explain the computed dates and write nothing."`
}

// Run issues the licence.
func (c *IssueCmd) Run(env *Env) error {
	if cs := catalogue(env); !cs.Known(c.Connector) {
		return fmt.Errorf("--connector %q: not a connector type sold (%s)", c.Connector, cs)
	}
	k, err := LoadKey(c.Key)
	if err != nil {
		return err
	}
	typ := keyring.Type(c.Type)
	if c.Type == "auto" {
		typ = k.Key.Types[0]
	}
	start, err := licensing.ParseDate(c.Start)
	if err != nil {
		return fmt.Errorf("--start: %w", err)
	}
	grace := c.GraceDays
	if grace < 0 {
		grace = 6
		if typ == keyring.TypeTrial || typ == keyring.TypeDemo {
			grace = 0
		}
	}
	plan, err := PlanTerm(start, c.Months, c.Days, grace)
	if err != nil {
		return err
	}
	lid := c.LID
	if lid == "" {
		var r [4]byte
		if _, err := rand.Read(r[:]); err != nil {
			return err
		}
		lid = fmt.Sprintf("L-%d-%s", now(env).UTC().Year(), hex.EncodeToString(r[:]))
	}
	claims := licensing.Claims{
		V: licensing.SchemaVersion, Iss: licensing.Issuer, LID: lid, Rev: c.Rev, IAT: now(env).UTC().Truncate(time.Second),
		Typ: typ, Sub: c.Sub, Licensee: c.Licensee, Connector: c.Connector,
		Term:       &licensing.Term{Start: plan.Start, End: plan.End, TZ: c.TZ},
		GraceUntil: &plan.GraceUntil, MinVersion: c.MinVersion,
	}
	if claims.Seats, err = parseSeats(c.Seats); err != nil {
		return err
	}
	if claims.Seats != nil {
		if claims.Overage, err = parseOverage(c.Overage); err != nil {
			return err
		}
	}
	if err := c.apply(&claims); err != nil {
		return err
	}
	return emit(env, k, claims, plan.Explain, c.Out, c.DryRun)
}

// emit explains, issues and writes a token.
func emit(env *Env, k *SigningKey, claims licensing.Claims, explain []string, out string, dryRun bool) error {
	w := stdout(env)
	p := &licensecli.Printer{W: w}
	if out == "-" { // the licence goes to stdout; the explanation to stderr
		p.W = os.Stderr
		if env.Stderr != nil {
			p.W = env.Stderr
		}
	}
	for _, line := range explain {
		p.Printf("%s\n", line)
	}
	l, armoured, err := k.Issue(claims)
	if err != nil {
		return err
	}
	if dryRun {
		p.Printf("dry run: nothing written\n")
		return p.Err
	}
	switch out {
	case "":
		return errors.New("--out FILE is required (or --dry-run)")
	case "-":
		if p.Err != nil {
			return p.Err
		}
		_, err = w.Write(armoured)
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o750); err != nil {
		return err
	}
	if err := os.WriteFile(out, armoured, 0o644); err != nil {
		return err
	}
	if l.IsRevocation() {
		p.Printf("wrote %s: revocation list seq %d\n", out, l.Claims().Seq)
		return p.Err
	}
	p.Printf("wrote %s: %s %s rev %d, %s, term %s..%s, grace until %s (%s)\n", out, l.Type(), l.LID(), l.Rev(),
		l.Connector(), l.Start(), l.End(), l.GraceUntil(), claims.Term.TZ)
	return p.Err
}

func parseSeats(s string) (*licensing.Seats, error) {
	if s == "" {
		return nil, nil
	}
	seats := &licensing.Seats{}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return nil, errors.New("--seats must be >= 0")
		}
		seats.Extensions = &n
		return seats, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("--seats %q: want N or extensions=N,crm_users=M", s)
		}
		switch k {
		case "extensions":
			seats.Extensions = &n
		case "crm_users":
			seats.CRMUsers = &n
		default:
			return nil, fmt.Errorf("--seats %q: want N or extensions=N,crm_users=M", s)
		}
	}
	return seats, nil
}

func parseOverage(s string) (*licensing.Overage, error) {
	r, h, ok := strings.Cut(s, ":")
	ratio, err1 := strconv.ParseFloat(r, 64)
	hours, err2 := strconv.Atoi(h)
	if !ok || err1 != nil || err2 != nil || math.IsNaN(ratio) || ratio < 0 || ratio > 1 || hours < 0 {
		return nil, fmt.Errorf("--overage %q: want RATIO:HOURS, e.g. 0.10:72", s)
	}
	return &licensing.Overage{Ratio: ratio, Hours: hours}, nil
}

// loadPrevious verifies a previous licence against the compiled keyring, the signing key and the
// dev keyring of devkeys builds.
func loadPrevious(env *Env, k *SigningKey, path string) (*licensing.License, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kr, err := keyring.Default()
	if err != nil {
		return nil, err
	}
	if _, ok := kr.Lookup(k.Key.KID); !ok {
		if kr, err = kr.Merge(k.Key); err != nil {
			return nil, err
		}
	}
	if env.Keyring != nil {
		kr = env.Keyring
	}
	l, err := (&licensing.Verifier{Keyring: kr, Connectors: catalogue(env), AllowDemo: true}).VerifyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if l.IsRevocation() {
		return nil, fmt.Errorf("%s is a revocation list", path)
	}
	return l, nil
}

// RenewCmd is `renew FILE --months N`.
type RenewCmd struct {
	File      string `arg:"" type:"existingfile" help:"The licence being renewed."`
	Key       string `required:"" type:"existingfile" help:"Signing key."`
	Months    int    `help:"Renewal term in calendar months."`
	Days      int    `help:"Renewal term in days."`
	GraceDays int    `default:"-1" help:"Days of grace (default: as the previous licence)."`
	Out       string `help:"Output file (- for stdout)." placeholder:"FILE"`
	DryRun    bool   `help:"Explain the computed dates and write nothing."`
}

// Run issues the next term: start = previous end + 1 day, same lid and rev, new iat.
func (c *RenewCmd) Run(env *Env) error {
	k, err := LoadKey(c.Key)
	if err != nil {
		return err
	}
	prev, err := loadPrevious(env, k, c.File)
	if err != nil {
		return err
	}
	grace := c.GraceDays
	if grace < 0 {
		grace = prev.End().DaysUntil(prev.GraceUntil())
	}
	start := prev.End().AddDays(1)
	plan, err := PlanTerm(start, c.Months, c.Days, grace)
	if err != nil {
		return err
	}
	claims := prev.Claims()
	claims.IAT = now(env).UTC().Truncate(time.Second)
	claims.Term = &licensing.Term{Start: plan.Start, End: plan.End, TZ: claims.Term.TZ}
	claims.GraceUntil = &plan.GraceUntil
	explain := append([]string{fmt.Sprintf("renewal of %s rev %d: previous term ended %s, so the renewal starts %s", prev.LID(), prev.Rev(), prev.End(), start)}, plan.Explain...)
	return emit(env, k, claims, explain, c.Out, c.DryRun)
}

// TransferCmd is `transfer FILE --licensee ... --sub ...`.
type TransferCmd struct {
	File     string `arg:"" type:"existingfile" help:"The licence being transferred."`
	Key      string `required:"" type:"existingfile" help:"Signing key."`
	Licensee string `required:"" help:"New customer name."`
	Sub      string `required:"" help:"New customer id."`
	bindingFlags
	Out    string `help:"Output file (- for stdout)." placeholder:"FILE"`
	DryRun bool   `help:"Explain and write nothing."`
}

// Run issues rev+1 for the new owner with the same term.
func (c *TransferCmd) Run(env *Env) error {
	k, err := LoadKey(c.Key)
	if err != nil {
		return err
	}
	prev, err := loadPrevious(env, k, c.File)
	if err != nil {
		return err
	}
	claims := prev.Claims()
	claims.Rev = prev.Rev() + 1
	claims.IAT = now(env).UTC().Truncate(time.Second)
	claims.Licensee, claims.Sub = c.Licensee, c.Sub
	if err := c.apply(&claims); err != nil {
		return err
	}
	explain := []string{
		fmt.Sprintf("transfer of %s: rev %d -> %d, same term %s..%s, grace until %s", prev.LID(), prev.Rev(), claims.Rev, prev.Start(), prev.End(), prev.GraceUntil()),
		fmt.Sprintf("add to the next revocation list: --lid %s:%d", prev.LID(), prev.Rev()),
	}
	return emit(env, k, claims, explain, c.Out, c.DryRun)
}

// RevokeCmd is `revoke --key K --lid LID[:REV_LE]... [--kid KID]... [--base PREV] --out FILE`.
type RevokeCmd struct {
	Key    string   `required:"" type:"existingfile" help:"Revocation-scope signing key."`
	LID    []string `name:"lid" sep:"none" placeholder:"LID[:REV_LE]" help:"Revoke every rev of LID up to REV_LE (all revisions when omitted). Repeatable."`
	KID    []string `name:"kid" sep:"none" help:"Revoke every licence signed by this key id. Repeatable."`
	Base   string   `type:"existingfile" help:"Previous revocation list: its entries are kept and seq continues from it."`
	Seq    int64    `help:"Sequence number (default: the base's seq + 1, or 1)."`
	Out    string   `help:"Output file (- for stdout)." placeholder:"FILE"`
	DryRun bool     `help:"Explain and write nothing."`
}

// Run builds and signs the list.
func (c *RevokeCmd) Run(env *Env) error {
	k, err := LoadKey(c.Key)
	if err != nil {
		return err
	}
	claims := licensing.Claims{V: licensing.SchemaVersion, Iss: licensing.Issuer, Typ: keyring.TypeRevocation,
		IAT: now(env).UTC().Truncate(time.Second)}
	entries := map[string]int{}
	var order []string
	add := func(lid string, rev int) {
		if _, ok := entries[lid]; !ok {
			order = append(order, lid)
		}
		entries[lid] = max(entries[lid], rev)
	}
	var baseSeq int64
	if c.Base != "" {
		data, err := os.ReadFile(c.Base)
		if err != nil {
			return err
		}
		kr, err := keyring.Default()
		if err != nil {
			return err
		}
		if _, ok := kr.Lookup(k.Key.KID); !ok {
			if kr, err = kr.Merge(k.Key); err != nil {
				return err
			}
		}
		if env.Keyring != nil {
			kr = env.Keyring
		}
		base, err := (&licensing.Verifier{Keyring: kr, Connectors: catalogue(env), AllowDemo: true}).VerifyFile(data)
		if err != nil {
			return fmt.Errorf("--base: %w", err)
		}
		if !base.IsRevocation() {
			return errors.New("--base is not a revocation list")
		}
		bc := base.Claims()
		baseSeq = bc.Seq
		for _, r := range bc.Revoked {
			add(r.LID, r.RevLE)
		}
		claims.RevokedKIDs = append(claims.RevokedKIDs, bc.RevokedKIDs...)
	}
	for _, s := range c.LID {
		lid, rev, hasRev := strings.Cut(s, ":")
		n := math.MaxInt32
		if hasRev {
			if n, err = strconv.Atoi(rev); err != nil || n < 1 {
				return fmt.Errorf("--lid %q: want LID[:REV_LE] with REV_LE >= 1", s)
			}
		}
		add(lid, n)
	}
	for _, lid := range order {
		claims.Revoked = append(claims.Revoked, licensing.Revoked{LID: lid, RevLE: entries[lid]})
	}
	for _, kid := range c.KID {
		if !containsString(claims.RevokedKIDs, kid) {
			claims.RevokedKIDs = append(claims.RevokedKIDs, kid)
		}
	}
	claims.Seq = c.Seq
	if claims.Seq == 0 {
		claims.Seq = baseSeq + 1
	}
	if claims.Seq <= baseSeq {
		return fmt.Errorf("--seq %d must be above the base's %d", claims.Seq, baseSeq)
	}
	explain := []string{fmt.Sprintf("revocation list seq %d: %d licence entries, %d keys", claims.Seq, len(claims.Revoked), len(claims.RevokedKIDs))}
	return emit(env, k, claims, explain, c.Out, c.DryRun)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
