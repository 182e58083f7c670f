// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/relay/natsbus/natsbustest"
)

// BenchmarkManySubscribers measures what many subscribers cost the
// embedded server: a restart of a relay with n of them (StartEmbedded
// with the stream and consumers there, then EnsureConsumers, as the relay
// starts), and adding one more to the n (SetSubscribers), each a
// subscriber limited to one tenant, as a relay giving each tenant one.
// Figures only (each subscriber's goroutines and heap are the process's
// over n+1):
//
//	go test ./relay/natsbus -run x -bench ManySubscribers -benchtime 1x
//
// With the relay's account importing each subscriber's seven to eleven
// API subjects (until 2026-12-06), run interleaved with the one after on
// a shared two-core machine: adding one to 500, 1,000 and 2,000 took 21,
// 27 and 59 ms, a restart 3.5, 10.0 and 32.7 s, the first start 5.0,
// 16.8 and 54.8 s. Since, with each passer's connection to JetStream
// its own (docs/performance.md, 2026-12-06), 4.5, 6.4 and 15.1 ms, 2.9,
// 7.8 and 16.2 s, 2.6, 4.1 and 5.7 s, on the machine busy with other
// tests; 16 goroutines and 260-280 KiB a subscriber.
func BenchmarkManySubscribers(b *testing.B) {
	for _, n := range []int{500, 1000, 2000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			log := slog.New(slog.DiscardHandler)
			subs := make([]natsbus.Subscriber, n+1)
			for i := range subs {
				kp, err := nkeys.CreateUser()
				if err != nil {
					b.Fatal(err)
				}
				pub, _ := kp.PublicKey()
				name := fmt.Sprintf("tenant%d", i)
				subs[i] = natsbus.Subscriber{Name: name, PublicKey: pub, Subjects: "scimrelay." + name + ".>"}
			}
			o := natsbus.Options{StoreDir: b.TempDir()}
			// The first start makes the stream and the n consumers.
			t0 := time.Now()
			e, _ := natsbustest.Start(b, o, log, subs[:n]...)
			first := time.Since(t0)
			e.Shutdown()
			var restart, add time.Duration
			for range b.N {
				t0 = time.Now()
				e, err := natsbus.StartEmbedded(o, subs[:n], log)
				if err != nil {
					b.Fatal(err)
				}
				if err := e.EnsureConsumers(); err != nil {
					b.Fatal(err)
				}
				restart += time.Since(t0)
				t0 = time.Now()
				if err := e.SetSubscribers(subs); err != nil {
					b.Fatal(err)
				}
				add += time.Since(t0)
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(runtime.NumGoroutine())/float64(n+1), "goroutines/sub")
				b.ReportMetric(float64(ms.HeapAlloc)/1024/float64(n+1), "heapKiB/sub")
				e.Shutdown()
			}
			b.ReportMetric(first.Seconds(), "first-start-s")
			b.ReportMetric(restart.Seconds()/float64(b.N), "restart-s")
			b.ReportMetric(float64(add.Microseconds())/1000/float64(b.N), "add-one-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
