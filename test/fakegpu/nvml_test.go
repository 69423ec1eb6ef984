package fakegpu

import (
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/utils/clock"

	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/gpu/collector"
)

// The fake NVML behind the real collector: an injected XID wakes WaitXIDs through the event set, the
// GPU is unhealthy with the XID in its evidence while the others stay healthy, and a cleared GPU
// answers again.
func TestFakeNVMLThroughTheCollector(t *testing.T) {
	f := NewNVML(4, "NVIDIA A100-SXM4-80GB")
	c := collector.New(f.Lib, clock.RealClock{}, collector.Options{})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	r := c.Poll()
	if len(r.GPUs) != 4 || len(r.Errors) != 0 {
		t.Fatalf("first poll: %d GPUs, errors %v; want 4 and none", len(r.GPUs), r.Errors)
	}
	for i, g := range r.GPUs {
		if g.Sample.UUID != UUID(i) || g.Health.State != gpu.Healthy {
			t.Errorf("GPU %d: %s %s, want %s Healthy", i, g.Sample.UUID, g.Health.State, UUID(i))
		}
	}
	if c.WaitXIDs(10 * time.Millisecond) {
		t.Fatal("WaitXIDs: an XID before any was injected")
	}

	go func() { _ = f.Inject(Fault{GPU: 2, XID: 79, Lost: true}) }()
	if !c.WaitXIDs(10 * time.Second) {
		t.Fatal("WaitXIDs: the injected XID did not wake it")
	}
	r = c.Poll()
	for i, g := range r.GPUs {
		want := gpu.Healthy
		if i == 2 {
			want = gpu.Unhealthy
		}
		if g.Health.State != want {
			t.Errorf("GPU %d after XID 79 on GPU 2: %s %v, want %s", i, g.Health.State, g.Health.Evidence, want)
		}
	}
	if ev := strings.Join(r.GPUs[2].Health.Evidence, "; "); !strings.Contains(ev, "79") {
		t.Errorf("GPU 2's evidence %q does not name XID 79", ev)
	}

	h, _ := f.Lib.DeviceGetHandleByIndex(2)
	if _, ret := h.GetMemoryInfo(); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("GPU 2 after XID 79 with Lost: GetMemoryInfo = %v, want ERROR_GPU_IS_LOST", ret)
	}
	if err := f.Clear(2); err != nil {
		t.Fatal(err)
	}
	if _, ret := h.GetMemoryInfo(); ret != nvml.SUCCESS {
		t.Errorf("GPU 2 after Clear: GetMemoryInfo = %v, want SUCCESS", ret)
	}
	if err := f.Inject(Fault{GPU: 4}); err == nil {
		t.Error("Inject on GPU 4 of 4: no error")
	}
}
