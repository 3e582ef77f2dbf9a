package licensing_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pbxbridge/pbxbridge/licensing"
)

// BenchmarkAllowed measures the per-call gate (dispatch and live events), from many goroutines.
func BenchmarkAllowed(b *testing.B) {
	keys := newKeys(b)
	e := newEnv(b, keys, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	c := paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", "UTC")
	c.Seats = &licensing.Seats{Extensions: intPtr(1)}
	e.write("l.lic", sign(b, keys.paid, c))
	e.reload()
	e.register("b24", b24, "101", "102", "103")
	if !e.svc.Allowed("b24") || !e.svc.ExtensionAllowed("b24", "101") || e.svc.ExtensionAllowed("b24", "103") {
		b.Fatal("setup")
	}
	b.Run("Allowed", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !e.svc.Allowed("b24") {
					b.Fatal("denied")
				}
			}
		})
	})
	b.Run("ExtensionAllowed", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !e.svc.ExtensionAllowed("b24", "101") {
					b.Fatal("denied")
				}
			}
		})
	})
}

// BenchmarkVerifyFile measures the full pipeline on one armoured licence.
func BenchmarkVerifyFile(b *testing.B) {
	keys := newKeys(b)
	c := paidClaims("L-1", 1, "2026-03-01", "2026-03-31", "2026-04-06", "Europe/Moscow")
	c.Hosts = []licensing.HostBinding{{FPV: 1, F: licensing.FingerprintOf(licensing.RawFactors(hostA)).Factors}}
	file := sign(b, keys.paid, c)
	v := keys.verifier()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyFile(file); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReload measures a full reload of a directory of 20 licences with 10 instances.
func BenchmarkReload(b *testing.B) {
	keys := newKeys(b)
	e := newEnv(b, keys, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	for i := range 20 {
		c := paidClaims(fmt.Sprintf("L-%d", i), 1, "2026-03-01", "2026-03-31", "2026-04-06", "UTC")
		e.write(fmt.Sprintf("l%d.lic", i), sign(b, keys.paid, c))
	}
	for i := range 10 {
		e.register(fmt.Sprintf("b24-%d", i), b24)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := e.svc.Reload(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
