//go:build nvml

// This test needs an NVIDIA driver and GPUs: go test -tags nvml -run TestRealNVML -v ./gpu/collector/

package collector

import (
	"fmt"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/utils/clock"

	"github.com/agentfleet/agentfleet/gpu"
)

// TestRealNVML runs collections against the node's real NVML and logs one line per GPU, so that
// its -v output is a report of the node.
func TestRealNVML(t *testing.T) {
	c := New(nvml.New(), clock.RealClock{}, Options{})
	if err := c.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	t.Logf("clock event reasons read with %s", map[bool]string{
		false: "nvmlDeviceGetCurrentClocksEventReasons", true: "nvmlDeviceGetCurrentClocksThrottleReasons (driver before R535)",
	}[c.legacyClocks])

	// WaitXIDs with a short timeout: the real NVML event wait must return, with or without events.
	waitStart := time.Now()
	got := c.WaitXIDs(100 * time.Millisecond)
	t.Logf("WaitXIDs(100ms) = %v after %v", got, time.Since(waitStart).Round(time.Millisecond))

	pollStart := time.Now()
	r := c.Poll()
	elapsed := time.Since(pollStart)
	if len(r.GPUs) == 0 {
		t.Fatal("NVML reported no GPU")
	}
	t.Logf("poll of %d GPUs took %v (%v per GPU); collection errors: %q",
		len(r.GPUs), elapsed.Round(time.Microsecond), (elapsed / time.Duration(len(r.GPUs))).Round(time.Microsecond), r.Errors)
	for _, g := range r.GPUs {
		s := g.Sample
		t.Logf("gpu %d uuid=%s product=%q memory=%s temp=%s power=%s util=%s clocks=%s ecc(unc/corr)=%s/%s "+
			"remap(pending/failed)=%s/%s retiredPending=%s xids=%v verdict=%s evidence=%q errors=%q",
			s.Index, s.UUID, s.Product, memory(s), reading(s.TemperatureC, "C"), watts(s.PowerMilliwatts),
			reading(s.UtilizationGPUPercent, "%"), hex(s.ClockEventReasons), reading(s.ECCUncorrectedVolatile, ""),
			reading(s.ECCCorrectedVolatile, ""), reading(s.RowRemapPending, ""), reading(s.RowRemapFailure, ""),
			reading(s.RetiredPagesPending, ""), s.XIDs, g.Verdict.State, g.Verdict.Evidence, s.Errors)
		if s.UUID == "" {
			t.Errorf("gpu %d: no UUID", s.Index)
		}
		if !s.MemoryTotalBytes.Valid || s.MemoryTotalBytes.Value == 0 {
			t.Errorf("gpu %d: memory total %v, want > 0", s.Index, s.MemoryTotalBytes)
		}
		switch g.Verdict.State {
		case gpu.Healthy, gpu.Degraded, gpu.Unhealthy:
		default:
			t.Errorf("gpu %d: verdict %q", s.Index, g.Verdict.State)
		}
	}

	// A second poll, for the per-GPU cost without first-call effects.
	pollStart = time.Now()
	c.Poll()
	elapsed = time.Since(pollStart)
	t.Logf("second poll took %v (%v per GPU)", elapsed.Round(time.Microsecond), (elapsed / time.Duration(len(r.GPUs))).Round(time.Microsecond))
}

func reading[T any](r gpu.Reading[T], unit string) string {
	if !r.Valid {
		return "n/a"
	}
	return fmt.Sprintf("%v%s", r.Value, unit)
}

func memory(s gpu.Sample) string {
	if !s.MemoryTotalBytes.Valid {
		return "n/a"
	}
	used := "n/a"
	if s.MemoryUsedBytes.Valid {
		used = fmt.Sprintf("%dMiB", s.MemoryUsedBytes.Value>>20)
	}
	return fmt.Sprintf("%s/%dMiB", used, s.MemoryTotalBytes.Value>>20)
}

func watts(r gpu.Reading[uint32]) string {
	if !r.Valid {
		return "n/a"
	}
	return fmt.Sprintf("%.1fW", float64(r.Value)/1000)
}

func hex(r gpu.Reading[uint64]) string {
	if !r.Valid {
		return "n/a"
	}
	return fmt.Sprintf("%#x", r.Value)
}
