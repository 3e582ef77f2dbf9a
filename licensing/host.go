package licensing

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/pbxbridge/pbxbridge/licensing/internal/owner"
)

// Host factor names (§3.8). mid, iid and fs travel with a disk or VM image copy; dmi and mac are
// tied to the hardware ("stable" factors).
const (
	FactorMachineID = "mid" // /etc/machine-id
	FactorInstallID = "iid" // install-id file in the state directory, written at first run
	FactorDMI       = "dmi" // /sys/class/dmi/id/product_uuid (root only)
	FactorRootFS    = "fs"  // UUID of the root filesystem
	FactorMAC       = "mac" // MAC address of the primary NIC
)

// FingerprintVersion is the `fpv` of fingerprints produced by this package.
const FingerprintVersion = 1

var (
	allFactors    = []string{FactorMachineID, FactorInstallID, FactorDMI, FactorRootFS, FactorMAC}
	stableFactors = []string{FactorDMI, FactorMAC}
)

// Default binding policy (§3.8): 3 of 5 factors, at least one of them hardware-tied.
const (
	DefaultMinMatch  = 3
	DefaultMinStable = 1
)

// IsStableFactor reports whether a factor is tied to the hardware (dmi, mac).
func IsStableFactor(name string) bool { return slices.Contains(stableFactors, name) }

// RawFactors are host identifiers as read from the system, keyed by factor name. Absent factors
// are simply missing. They are never written to tokens, requests or logs; only their HMACs are.
type RawFactors map[string]string

// HostSource reads the raw host factors. SystemHost is the production implementation; tests
// inject their own.
type HostSource interface {
	ReadFactors(ctx context.Context) (RawFactors, error)
}

// Fingerprint is the HMAC'd form of the host factors that goes into request codes and tokens.
type Fingerprint struct {
	FPV     int               `json:"fpv"`
	Factors map[string]string `json:"f"`
}

// factorKey is the product key of the factor HMAC (like systemd's app-specific machine ids): it
// is not a secret, it only keeps raw machine identifiers out of licences and request codes and
// makes them useless to other products.
var factorKey = []byte("pbxbridge-host-factor:v1")

// FingerprintOf HMACs raw factors: HMAC-SHA256(product key, name ":" value), first 16 bytes,
// base64url.
func FingerprintOf(raw RawFactors) Fingerprint {
	fp := Fingerprint{FPV: FingerprintVersion, Factors: map[string]string{}}
	for _, name := range allFactors {
		v := strings.TrimSpace(raw[name])
		if v == "" {
			continue
		}
		m := hmac.New(sha256.New, factorKey)
		m.Write([]byte(name + ":" + v))
		fp.Factors[name] = base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
	}
	return fp
}

// HostMatch is the result of comparing a licence's host binding with this host.
type HostMatch struct {
	Bound          bool     `json:"bound"` // false: the licence is not host-bound
	OK             bool     `json:"ok"`
	Matched        int      `json:"matched"`
	Required       int      `json:"required"`
	StableMatched  int      `json:"stable_matched"`
	StableRequired int      `json:"stable_required"`
	Failing        []string `json:"failing,omitempty"` // factors present on both sides that differ
	Missing        []string `json:"missing,omitempty"` // factors in the licence this host lacks
}

// matchHosts evaluates the k-of-n rule against every bound host and returns the best entry.
func matchHosts(hosts []HostBinding, minMatch, minStable int, fp Fingerprint) HostMatch {
	if len(hosts) == 0 {
		return HostMatch{Bound: false, OK: true}
	}
	var best HostMatch
	for i, h := range hosts {
		req, sreq := minMatch, minStable
		if req == 0 {
			req = min(DefaultMinMatch, len(h.F))
		}
		if sreq == 0 && minMatch == 0 {
			for _, s := range stableFactors {
				if h.F[s] != "" {
					sreq = DefaultMinStable
				}
			}
		}
		m := HostMatch{Bound: true, Required: req, StableRequired: sreq}
		for _, name := range allFactors {
			want, ok := h.F[name]
			if !ok {
				continue
			}
			got, have := fp.Factors[name]
			switch {
			case !have:
				m.Missing = append(m.Missing, name)
			case hmac.Equal([]byte(got), []byte(want)):
				m.Matched++
				if IsStableFactor(name) {
					m.StableMatched++
				}
			default:
				m.Failing = append(m.Failing, name)
			}
		}
		m.OK = m.Matched >= m.Required && m.StableMatched >= m.StableRequired
		if i == 0 || better(m, best) {
			best = m
		}
	}
	return best
}

func better(a, b HostMatch) bool {
	if a.OK != b.OK {
		return a.OK
	}
	return a.Matched+a.StableMatched > b.Matched+b.StableMatched
}

// InstallIDFile is the name of the install-id file in the state directory.
const InstallIDFile = "install-id"

// EnsureInstallID returns the install id stored in stateDir, creating it (128 random bits, hex)
// on first use.
func EnsureInstallID(stateDir string) (string, error) {
	p := filepath.Join(stateDir, InstallIDFile)
	if b, err := os.ReadFile(p); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading install id: %w", err)
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(r[:])
	if err := owner.MkdirAll(stateDir, 0o750); err != nil {
		return "", fmt.Errorf("creating state dir: %w", err)
	}
	if err := writeFileAtomic(p, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("writing install id: %w", err)
	}
	return id, nil
}

// SystemHost reads host factors from a Linux system. Root prefixes every system path (empty for
// the real system; a directory tree in tests). StateDir holds the install-id file (not created
// here; see EnsureInstallID).
type SystemHost struct {
	Root     string
	StateDir string
}

// ReadFactors reads every factor it can; unreadable factors are left out. It never fails because
// one factor is missing.
func (h SystemHost) ReadFactors(ctx context.Context) (RawFactors, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	raw := RawFactors{}
	put := func(name, v string) {
		if v = strings.TrimSpace(v); v != "" {
			raw[name] = v
		}
	}
	put(FactorMachineID, h.readSmall("/etc/machine-id"))
	put(FactorDMI, strings.ToLower(h.readSmall("/sys/class/dmi/id/product_uuid")))
	if h.StateDir != "" {
		if b, err := os.ReadFile(filepath.Join(h.StateDir, InstallIDFile)); err == nil {
			put(FactorInstallID, string(b))
		}
	}
	put(FactorRootFS, h.rootFSUUID())
	put(FactorMAC, h.primaryMAC())
	return raw, nil
}

func (h SystemHost) path(p string) string { return filepath.Join(h.Root, p) }

func (h SystemHost) readSmall(p string) string {
	f, err := os.Open(h.path(p))
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 256)
	n, _ := f.Read(b)
	return strings.TrimSpace(string(b[:n]))
}

// rootFSUUID finds the block device mounted at / in mountinfo and the /dev/disk/by-uuid link that
// points to it.
func (h SystemHost) rootFSUUID() string {
	data, err := os.ReadFile(h.path("/proc/self/mountinfo"))
	if err != nil {
		return ""
	}
	var source string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[4] != "/" {
			continue
		}
		for i := 6; i < len(f)-2; i++ {
			if f[i] == "-" {
				source = f[i+2]
			}
		}
	}
	if !strings.HasPrefix(source, "/dev/") {
		return ""
	}
	byUUID := h.path("/dev/disk/by-uuid")
	entries, err := os.ReadDir(byUUID)
	if err != nil {
		return ""
	}
	want := filepath.Base(source)
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(byUUID, e.Name()))
		if err == nil && filepath.Base(target) == want {
			return strings.ToLower(e.Name())
		}
	}
	return ""
}

// primaryMAC returns the MAC of the default-route interface if it is a physical NIC, else of the
// first physical NIC by name, else of the default-route interface.
func (h SystemHost) primaryMAC() string {
	netDir := h.path("/sys/class/net")
	entries, err := os.ReadDir(netDir)
	if err != nil {
		return ""
	}
	physical := func(name string) bool {
		_, err := os.Stat(filepath.Join(netDir, name, "device"))
		return err == nil
	}
	addr := func(name string) string {
		a := strings.ToLower(h.readSmall(filepath.Join("/sys/class/net", name, "address")))
		if a == "" || strings.Trim(a, "0:") == "" {
			return ""
		}
		return a
	}
	def := h.defaultRouteIface()
	if def != "" && physical(def) {
		if a := addr(def); a != "" {
			return a
		}
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		if n != "lo" && physical(n) {
			if a := addr(n); a != "" {
				return a
			}
		}
	}
	if def != "" {
		return addr(def)
	}
	return ""
}

func (h SystemHost) defaultRouteIface() string {
	data, err := os.ReadFile(h.path("/proc/net/route"))
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[1] == "00000000" {
			return f[0]
		}
	}
	return ""
}

var _ HostSource = SystemHost{}
