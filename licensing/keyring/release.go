package keyring

import (
	"time"

	"github.com/pbxbridge/pbxbridge/licensing/internal/paseto"
)

// releaseKey is one entry of the compiled release keyring. Only public keys live here; the private
// halves are kept offline by the vendor and never enter the repository.
type releaseKey struct {
	kid       string
	public    string // k4.public PASERK
	types     []Type
	notBefore string // RFC 3339
	notAfter  string // RFC 3339, "" for open-ended
	status    Status
}

// releaseKeys is the release keyring. Changing it changes ReleaseDigest's pinned value in
// release_test.go, which is the point: a key only changes through a reviewed release. To rotate,
// add the next key here at least one release before issuing with it.
var releaseKeys = [...]releaseKey{
	{ // paid + nfr licences
		kid:       "k4.pid.CbsFOyXKKiZrRlEMICQD6rqmog2wR-8IlzxYwWDn2WhE",
		public:    "k4.public.w7RRuAlckz8rReIHbKxADSEMbOE16VyR_WJ6bUPdBXk",
		types:     []Type{TypePaid, TypeNFR},
		notBefore: "2026-11-01T00:00:00Z",
		notAfter:  "2031-12-31T23:59:59Z",
		status:    StatusActive,
	},
	{ // trials (the web portal's key: it cannot mint paid licences)
		kid:       "k4.pid.W5cCqj7XP5nwX_T78Tz1gtcEJIPvnXB2hEO6MyV2N1cK",
		public:    "k4.public.wgQfDCzOIYQIzGNDJfde_wn-HXBOVBnm2ZUTDMNPP1k",
		types:     []Type{TypeTrial},
		notBefore: "2026-11-01T00:00:00Z",
		notAfter:  "2031-12-31T23:59:59Z",
		status:    StatusActive,
	},
	{ // revocation lists
		kid:       "k4.pid.TSdJGElREH63-LO9sQfulqBL7iC_PbpZU81ju2oTmdoK",
		public:    "k4.public.p5B5YnFzwvQ1PzkbJkMdV9N3MqH-sw64GE9p4McfqCM",
		types:     []Type{TypeRevocation},
		notBefore: "2026-11-01T00:00:00Z",
		notAfter:  "2031-12-31T23:59:59Z",
		status:    StatusActive,
	},
	{ // demo licences: valid only for CRM accounts under .invalid (enforced by the verifier)
		kid:       "k4.pid.7fPrc1_Mp1lWJ9CJwdYPC3b-WgOP0aQ-jr3nxda7Zoct",
		public:    "k4.public.z9qjosATjBy7MIuxrB4r7AuXwggQc4FVIM8KLm-3GOk",
		types:     []Type{TypeDemo},
		notBefore: "2026-11-01T00:00:00Z",
		notAfter:  "2036-12-31T23:59:59Z",
		status:    StatusActive,
	},
}

// Release returns the compiled release keyring. It panics only if the compiled table itself is
// malformed, which the release test rules out.
func Release() *Keyring {
	keys := make([]Key, 0, len(releaseKeys))
	for _, rk := range releaseKeys {
		pk, err := paseto.DecodePublic(rk.public)
		if err != nil {
			panic("keyring: compiled release key " + rk.kid + ": " + err.Error())
		}
		k := Key{KID: rk.kid, Public: pk, Types: rk.types, NotBefore: mustTime(rk.notBefore), Status: rk.status}
		if rk.notAfter != "" {
			k.NotAfter = mustTime(rk.notAfter)
		}
		keys = append(keys, k)
	}
	kr, err := New(keys...)
	if err != nil {
		panic(err.Error())
	}
	return kr
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic("keyring: compiled time " + s + ": " + err.Error())
	}
	return t
}
