package db_test

import (
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
)

// BenchmarkClaimFinish measures claim+finish throughput with a no-op handler: 8 workers of one
// agent drain b.N pending orders (claims in batches of 8). Run it as
//
//	go test -run '^$' -bench ClaimFinish -benchtime 5000x ./db
//
// and read the orders/s metric.
func BenchmarkClaimFinish(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			s := setup(b, e.url(b))
			insertPending(b, s, b.N)
			b.ResetTimer()
			start := time.Now()
			drainQueue(b, []*db.Store{s}, 8, 8, b.N, nil)
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "orders/s")
		})
	}
}
