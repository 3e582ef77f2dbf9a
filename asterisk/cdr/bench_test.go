package cdr

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchFile writes n synthetic records (calls of three rows, in hang-up order, the recorded
// Master.csv's column set) to a temporary file.
func benchFile(b *testing.B, n int) (*CSVReader, []Row) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "Master.csv")
	r := mustReader(b, CSVConfig{Path: path, LogUniqueID: true, LogUserField: true, Location: time.UTC,
		MaxCallAge: 2 * time.Hour, MaxRows: 10 * n})
	rows := synthRows(rand.New(rand.NewPCG(5, 6)), n, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		5*time.Second, 30*time.Minute)
	if err := os.WriteFile(path, writeRows(r, rows), 0o600); err != nil {
		b.Fatal(err)
	}
	return r, rows
}

// BenchmarkReadMasterCSV reads a whole 200,000-record Master.csv (~55 MB): the cost of the
// first recovery on a PBX whose file was never seeked into. Reports records/s and MB/s.
func BenchmarkReadMasterCSV(b *testing.B) {
	const n = 200_000
	r, rows := benchFile(b, n)
	fi, err := os.Stat(r.cfg.Path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := r.Read(context.Background(), time.Time{}, rows[len(rows)-1].End.Add(time.Hour))
		if err != nil || len(got) != n {
			b.Fatalf("%d rows, %v", len(got), err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkReadMasterCSVWindow reads the last 10 minutes of the same file: the time seek
// skips the rest (the window plus MaxCallAge of records before it are streamed).
func BenchmarkReadMasterCSVWindow(b *testing.B) {
	r, rows := benchFile(b, 200_000)
	to := rows[len(rows)-1].End
	from := to.Add(-10 * time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := r.Read(context.Background(), from, to); err != nil {
			b.Fatal(err)
		}
	}
}
