package collector

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// BenchmarkPoll measures one poll of 8 GPUs over go-nvml's mock: the collector's own CPU time and
// allocations, not NVML's (a real driver call takes microseconds; see nvml_real_test.go). The mock
// records every call it gets, which adds a little of both.
func BenchmarkPoll(b *testing.B) {
	const gpus = 8
	fakes := make([]*fakeGPU, gpus)
	for i := range fakes {
		fakes[i] = healthyGPU(fmt.Sprintf("GPU-%d", i))
	}
	fakes[3].temp = 90 // one Degraded GPU, so evidence is built every poll
	f := newFakeNVML(fakes...)
	clk := testingclock.NewFakeClock(t0)
	c := New(f.lib, clk, Options{})
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%64 == 0 {
			f.xid(i%gpus, 13) // an ignored XID now and then, so the event path is in the numbers
		}
		clk.Step(10 * time.Second)
		if r := c.Poll(); len(r.GPUs) != gpus {
			b.Fatalf("Poll() returned %d GPUs, want %d", len(r.GPUs), gpus)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*gpus), "ns/gpu/poll")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*gpus), "allocs/gpu/poll")
}
