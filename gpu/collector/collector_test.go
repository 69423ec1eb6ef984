package collector

import (
	"errors"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/google/go-cmp/cmp"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/agentfleet/agentfleet/gpu"
)

// t0 is the fake clock's start: any fixed time will do.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func start(t *testing.T, f *fakeNVML, o Options) (*Collector, *testingclock.FakeClock) {
	t.Helper()
	clk := testingclock.NewFakeClock(t0)
	c := New(f.lib, clk, o)
	if err := c.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c, clk
}

func TestPollReadsEveryField(t *testing.T) {
	busy := &fakeGPU{
		uuid: "GPU-b", name: "NVIDIA A100-SXM4-80GB",
		mem:  nvml.Memory{Total: 80 << 30, Used: 60 << 30},
		util: nvml.Utilization{Gpu: 97, Memory: 71}, temp: 71, power: 390_500,
		reasons: gpu.ClockEventSwPowerCap, eccUnc: 0, eccCorr: 12,
		remapPending: false, remapFailed: false, retiredPending: false,
		events: nvml.EventTypeXidCriticalError,
	}
	// A consumer GPU: no ECC, no row remapping, no page retirement.
	consumer := healthyGPU("GPU-c")
	consumer.name = "NVIDIA GeForce RTX 4090"
	consumer.rets = map[string]nvml.Return{
		"GetTotalEccErrors":            nvml.ERROR_NOT_SUPPORTED,
		"GetRemappedRows":              nvml.ERROR_NOT_SUPPORTED,
		"GetRetiredPagesPendingStatus": nvml.ERROR_NOT_SUPPORTED,
		"GetPowerUsage":                nvml.ERROR_UNKNOWN,
	}
	f := newFakeNVML(busy, consumer)
	c, _ := start(t, f, Options{})

	got := c.Poll()
	want := Report{Time: t0, GPUs: []GPU{
		{
			Sample: gpu.Sample{
				Index: 0, UUID: "GPU-b", Product: "NVIDIA A100-SXM4-80GB", Probed: true,
				MemoryTotalBytes: gpu.Valid[uint64](80 << 30), MemoryUsedBytes: gpu.Valid[uint64](60 << 30),
				UtilizationGPUPercent: gpu.Valid[uint32](97), UtilizationMemoryPercent: gpu.Valid[uint32](71),
				TemperatureC: gpu.Valid[uint32](71), PowerMilliwatts: gpu.Valid[uint32](390_500),
				ClockEventReasons:      gpu.Valid(gpu.ClockEventSwPowerCap),
				ECCUncorrectedVolatile: gpu.Valid[uint64](0), ECCCorrectedVolatile: gpu.Valid[uint64](12),
				RowRemapPending: gpu.Valid(false), RowRemapFailure: gpu.Valid(false),
				RetiredPagesPending: gpu.Valid(false),
			},
			Verdict: gpu.Verdict{State: gpu.Healthy},
			Health:  gpu.Health{State: gpu.Healthy},
		},
		{
			Sample: gpu.Sample{
				Index: 1, UUID: "GPU-c", Product: "NVIDIA GeForce RTX 4090", Probed: true,
				MemoryTotalBytes: gpu.Valid[uint64](80 << 30), MemoryUsedBytes: gpu.Valid[uint64](1 << 30),
				UtilizationGPUPercent: gpu.Valid[uint32](30), UtilizationMemoryPercent: gpu.Valid[uint32](10),
				TemperatureC:      gpu.Valid[uint32](40),
				ClockEventReasons: gpu.Valid[uint64](0),
				Errors:            []string{"GetPowerUsage: ERROR_UNKNOWN"},
			},
			Verdict: gpu.Verdict{State: gpu.Healthy},
			Health:  gpu.Health{State: gpu.Healthy},
		},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Poll() (-want +got):\n%s", diff)
	}
}

func TestVerdicts(t *testing.T) {
	custom := gpu.DefaultPolicy()
	custom.MaxTemperatureC = 0
	custom.ThrottleReasons |= gpu.ClockEventSwPowerCap
	custom.CorrectableBurst = 0

	cases := map[string]struct {
		policy *gpu.Policy
		// setup runs before the first poll; change, if set, before a second one. The verdict of the
		// last poll is checked.
		setup, change func(g *fakeGPU)
		want          gpu.Verdict
	}{
		"healthy": {
			want: gpu.Verdict{State: gpu.Healthy},
		},
		"uncorrectable ECC since the driver loaded": {
			setup: func(g *fakeGPU) { g.eccUnc = 2 },
			want:  gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{"volatile uncorrectable ECC errors 0 -> 2"}},
		},
		"uncorrectable ECC increase": {
			setup:  func(g *fakeGPU) { g.eccUnc = 1 },
			change: func(g *fakeGPU) { g.eccUnc = 3 },
			want:   gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{"volatile uncorrectable ECC errors 1 -> 3"}},
		},
		"uncorrectable ECC unchanged is no new fault": {
			setup:  func(g *fakeGPU) { g.eccUnc = 1 },
			change: func(*fakeGPU) {},
			want:   gpu.Verdict{State: gpu.Healthy},
		},
		"uncorrectable ECC after a driver reload restarts from zero": {
			setup:  func(g *fakeGPU) { g.eccUnc = 5 },
			change: func(g *fakeGPU) { g.eccUnc = 1 },
			want:   gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{"volatile uncorrectable ECC errors 0 -> 1"}},
		},
		"row remap failure": {
			setup: func(g *fakeGPU) { g.remapFailed = true },
			want:  gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{"row remapping failed"}},
		},
		"row remap pending": {
			setup: func(g *fakeGPU) { g.remapPending = true },
			want:  gpu.Verdict{State: gpu.Degraded, Evidence: []string{"row remapping pending (applied at the next GPU reset)"}},
		},
		"retired pages pending": {
			setup: func(g *fakeGPU) { g.retiredPending = true },
			want:  gpu.Verdict{State: gpu.Degraded, Evidence: []string{"page retirement pending (applied at the next GPU reset)"}},
		},
		"hardware thermal throttling": {
			setup: func(g *fakeGPU) { g.reasons = gpu.ClockEventHwThermalSlowdown },
			want:  gpu.Verdict{State: gpu.Degraded, Evidence: []string{"thermal throttling (HwThermalSlowdown)"}},
		},
		"software thermal throttling": {
			setup: func(g *fakeGPU) { g.reasons = gpu.ClockEventSwThermalSlowdown },
			want:  gpu.Verdict{State: gpu.Degraded, Evidence: []string{"thermal throttling (SwThermalSlowdown)"}},
		},
		"power brake throttling": {
			setup: func(g *fakeGPU) { g.reasons = gpu.ClockEventHwPowerBrakeSlowdown },
			want:  gpu.Verdict{State: gpu.Degraded, Evidence: []string{"power throttling (HwPowerBrakeSlowdown)"}},
		},
		"hardware slowdown": {
			setup: func(g *fakeGPU) { g.reasons = gpu.ClockEventHwSlowdown | gpu.ClockEventHwThermalSlowdown },
			want: gpu.Verdict{State: gpu.Degraded, Evidence: []string{
				"thermal throttling (HwThermalSlowdown)", "hardware slowdown (HwSlowdown)",
			}},
		},
		"running at the power cap is not throttling by default": {
			setup: func(g *fakeGPU) { g.reasons = gpu.ClockEventSwPowerCap },
			want:  gpu.Verdict{State: gpu.Healthy},
		},
		"running at the power cap when the policy says so": {
			policy: &custom,
			setup:  func(g *fakeGPU) { g.reasons = gpu.ClockEventSwPowerCap },
			want:   gpu.Verdict{State: gpu.Degraded, Evidence: []string{"power throttling (SwPowerCap)"}},
		},
		"idle and application clocks are not throttling": {
			setup: func(g *fakeGPU) {
				g.reasons = nvml.ClocksEventReasonGpuIdle | nvml.ClocksEventReasonApplicationsClocksSetting
			},
			want: gpu.Verdict{State: gpu.Healthy},
		},
		"legacy driver: throttle reasons from the old call": {
			setup: func(g *fakeGPU) {
				g.reasons = gpu.ClockEventHwThermalSlowdown
				g.rets = map[string]nvml.Return{"GetCurrentClocksEventReasons": nvml.ERROR_FUNCTION_NOT_FOUND}
			},
			want: gpu.Verdict{State: gpu.Degraded, Evidence: []string{"thermal throttling (HwThermalSlowdown)"}},
		},
		"temperature over the threshold": {
			setup: func(g *fakeGPU) { g.temp = 86 },
			want:  gpu.Verdict{State: gpu.Degraded, Evidence: []string{"temperature 86C over 85C"}},
		},
		"temperature at the threshold": {
			setup: func(g *fakeGPU) { g.temp = 85 },
			want:  gpu.Verdict{State: gpu.Healthy},
		},
		"temperature check off": {
			policy: &custom,
			setup:  func(g *fakeGPU) { g.temp = 99 },
			want:   gpu.Verdict{State: gpu.Healthy},
		},
		"correctable ECC burst": {
			setup:  func(g *fakeGPU) { g.eccCorr = 10 },
			change: func(g *fakeGPU) { g.eccCorr = 111 },
			want:   gpu.Verdict{State: gpu.Degraded, Evidence: []string{"correctable ECC errors +101 in one poll (over 100)"}},
		},
		"correctable ECC at the burst count": {
			setup:  func(g *fakeGPU) { g.eccCorr = 10 },
			change: func(g *fakeGPU) { g.eccCorr = 110 },
			want:   gpu.Verdict{State: gpu.Healthy},
		},
		"correctable ECC count since boot is no burst": {
			setup: func(g *fakeGPU) { g.eccCorr = 5000 },
			want:  gpu.Verdict{State: gpu.Healthy},
		},
		"correctable ECC burst check off": {
			policy: &custom,
			setup:  func(g *fakeGPU) { g.eccCorr = 10 },
			change: func(g *fakeGPU) { g.eccCorr = 5000 },
			want:   gpu.Verdict{State: gpu.Healthy},
		},
		"lost": {
			change: func(g *fakeGPU) { g.lost = true },
			want:   gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{"gpu lost (ERROR_GPU_IS_LOST)"}},
		},
		"lost before start": {
			setup: func(g *fakeGPU) { g.lostHandle = true },
			want:  gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{"gpu lost (ERROR_GPU_IS_LOST)"}},
		},
		"reset required": {
			change: func(g *fakeGPU) { g.rets = map[string]nvml.Return{"GetPowerUsage": nvml.ERROR_RESET_REQUIRED} },
			want:   gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{"gpu requires a reset (ERROR_RESET_REQUIRED)"}},
		},
		"unsupported fields are absent, not faults": {
			setup: func(g *fakeGPU) {
				g.rets = map[string]nvml.Return{}
				for _, call := range []string{"GetMemoryInfo", "GetUtilizationRates", "GetTemperature", "GetPowerUsage",
					"GetCurrentClocksEventReasons", "GetTotalEccErrors", "GetRemappedRows", "GetRetiredPagesPendingStatus",
					"GetSupportedEventTypes"} {
					g.rets[call] = nvml.ERROR_NOT_SUPPORTED
				}
			},
			want: gpu.Verdict{State: gpu.Healthy},
		},
		"unhealthy evidence first": {
			setup: func(g *fakeGPU) { g.temp, g.eccUnc, g.remapFailed = 90, 1, true },
			want: gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{
				"volatile uncorrectable ECC errors 0 -> 1", "row remapping failed", "temperature 90C over 85C",
			}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			g := healthyGPU("GPU-0")
			f := newFakeNVML(g)
			if tc.setup != nil {
				tc.setup(g)
				f.legacy = g.rets["GetCurrentClocksEventReasons"] == nvml.ERROR_FUNCTION_NOT_FOUND
			}
			// No back-off: the second poll probes a GPU the first found Unhealthy.
			c, clk := start(t, f, Options{Policy: tc.policy, Recovery: &gpu.RecoveryPolicy{}})
			r := c.Poll()
			if tc.change != nil {
				tc.change(g)
				clk.Step(time.Second)
				r = c.Poll()
			}
			if diff := cmp.Diff(tc.want, r.GPUs[0].Verdict); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			if got := r.GPUs[0].Sample.Errors; len(got) > 0 {
				t.Errorf("sample errors: %q, want none", got)
			}
		})
	}
}

func TestXIDs(t *testing.T) {
	cases := map[string]struct {
		policy *gpu.Policy
		xids   []uint64
		want   gpu.Verdict
	}{
		// The device plugin's application errors.
		"13 ignored":       {xids: []uint64{13}, want: gpu.Verdict{State: gpu.Healthy}},
		"31 ignored":       {xids: []uint64{31}, want: gpu.Verdict{State: gpu.Healthy}},
		"43 ignored":       {xids: []uint64{43}, want: gpu.Verdict{State: gpu.Healthy}},
		"45 ignored":       {xids: []uint64{45}, want: gpu.Verdict{State: gpu.Healthy}},
		"68 ignored":       {xids: []uint64{68}, want: gpu.Verdict{State: gpu.Healthy}},
		"109 ignored":      {xids: []uint64{109}, want: gpu.Verdict{State: gpu.Healthy}},
		"48 critical":      {xids: []uint64{48}, want: unhealthyXID(48, "xid 48 (double bit ECC error)")},
		"63 critical":      {xids: []uint64{63}, want: unhealthyXID(63, "xid 63 (ECC page retirement or row remapping recording event)")},
		"64 critical":      {xids: []uint64{64}, want: unhealthyXID(64, "xid 64 (ECC page retirement or row remapper recording failure)")},
		"74 critical":      {xids: []uint64{74}, want: unhealthyXID(74, "xid 74 (NVLink error)")},
		"79 critical":      {xids: []uint64{79}, want: unhealthyXID(79, "xid 79 (GPU has fallen off the bus)")},
		"94 critical":      {xids: []uint64{94}, want: unhealthyXID(94, "xid 94 (contained ECC error)")},
		"95 critical":      {xids: []uint64{95}, want: unhealthyXID(95, "xid 95 (uncontained ECC error)")},
		"119 critical":     {xids: []uint64{119}, want: unhealthyXID(119, "xid 119 (GSP RPC timeout)")},
		"unnamed critical": {xids: []uint64{154}, want: unhealthyXID(154, "xid 154")},
		"repeated": {
			xids: []uint64{79, 13, 79, 48},
			want: gpu.Verdict{State: gpu.Unhealthy, CriticalXIDs: []uint64{79, 48}, Evidence: []string{
				"xid 79 (GPU has fallen off the bus), 2 events", "xid 48 (double bit ECC error)",
			}},
		},
		"own ignore list: 13 critical": {
			policy: policyIgnoring(t, "79, 94"),
			xids:   []uint64{13},
			want:   unhealthyXID(13, "xid 13 (graphics engine exception)"),
		},
		"own ignore list: 79 ignored": {
			policy: policyIgnoring(t, "79, 94"),
			xids:   []uint64{79, 94},
			want:   gpu.Verdict{State: gpu.Healthy},
		},
		"empty ignore list: all critical": {
			policy: policyIgnoring(t, ""),
			xids:   []uint64{109},
			want:   unhealthyXID(109, "xid 109 (context switch timeout)"),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFakeNVML(healthyGPU("GPU-0"), healthyGPU("GPU-1"))
			c, _ := start(t, f, Options{Policy: tc.policy})
			for _, x := range tc.xids {
				f.xid(1, x)
			}
			r := c.Poll()
			if diff := cmp.Diff(tc.want, r.GPUs[1].Verdict); diff != "" {
				t.Errorf("GPU 1 verdict (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.xids, r.GPUs[1].Sample.XIDs); diff != "" {
				t.Errorf("GPU 1 XIDs, ignored ones included (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(gpu.Verdict{State: gpu.Healthy}, r.GPUs[0].Verdict); diff != "" {
				t.Errorf("GPU 0, without events (-want +got):\n%s", diff)
			}
			if r := c.Poll(); r.GPUs[1].Sample.XIDs != nil {
				t.Errorf("next poll XIDs = %v, want them taken once", r.GPUs[1].Sample.XIDs)
			}
		})
	}
}

func unhealthyXID(xid uint64, evidence string) gpu.Verdict {
	return gpu.Verdict{State: gpu.Unhealthy, CriticalXIDs: []uint64{xid}, Evidence: []string{evidence}}
}

func policyIgnoring(t *testing.T, list string) *gpu.Policy {
	t.Helper()
	xids, err := gpu.ParseXIDList(list)
	if err != nil {
		t.Fatal(err)
	}
	p := gpu.DefaultPolicy()
	p.IgnoredXIDs = xids
	return &p
}

func TestXIDEventAttribution(t *testing.T) {
	f := newFakeNVML(healthyGPU("GPU-0"), healthyGPU("GPU-1"))
	c, _ := start(t, f, Options{})
	// Another handle for GPU 1 (matched by UUID), a GPU that is not ours, an event without a GPU,
	// and an event of another type.
	other := healthyGPU("GPU-1")
	f.queue = append(f.queue,
		nvml.EventData{Device: other.device(), EventType: nvml.EventTypeXidCriticalError, EventData: 79},
		nvml.EventData{Device: healthyGPU("GPU-x").device(), EventType: nvml.EventTypeXidCriticalError, EventData: 48},
		nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: 48},
		nvml.EventData{Device: f.gpus[0].dev, EventType: nvml.EventTypeSingleBitEccError, EventData: 1},
	)
	r := c.Poll()
	got := [][]uint64{r.GPUs[0].Sample.XIDs, r.GPUs[1].Sample.XIDs}
	if diff := cmp.Diff([][]uint64{nil, {79}}, got); diff != "" {
		t.Errorf("XIDs per GPU (-want +got):\n%s", diff)
	}
}

func TestLostGPUNextToHealthy(t *testing.T) {
	falling, fine, gone := healthyGPU("GPU-falling"), healthyGPU("GPU-fine"), healthyGPU("")
	gone.lostHandle = true
	f := newFakeNVML(falling, fine, gone)
	c, clk := start(t, f, Options{})
	c.Poll()
	falling.lost = true
	clk.Step(time.Second)
	r := c.Poll()

	healthySample := func(i int, uuid string) gpu.Sample {
		return gpu.Sample{
			Index: i, UUID: uuid, Product: "NVIDIA H100 80GB HBM3", Probed: true,
			MemoryTotalBytes: gpu.Valid[uint64](80 << 30), MemoryUsedBytes: gpu.Valid[uint64](1 << 30),
			UtilizationGPUPercent: gpu.Valid[uint32](30), UtilizationMemoryPercent: gpu.Valid[uint32](10),
			TemperatureC: gpu.Valid[uint32](40), PowerMilliwatts: gpu.Valid[uint32](120_000),
			ClockEventReasons:      gpu.Valid[uint64](0),
			ECCUncorrectedVolatile: gpu.Valid[uint64](0), ECCCorrectedVolatile: gpu.Valid[uint64](0),
			RowRemapPending: gpu.Valid(false), RowRemapFailure: gpu.Valid(false), RetiredPagesPending: gpu.Valid(false),
		}
	}
	lost := gpu.Verdict{State: gpu.Unhealthy, Evidence: []string{"gpu lost (ERROR_GPU_IS_LOST)"}}
	want := []GPU{
		{
			Sample:  gpu.Sample{Index: 0, UUID: "GPU-falling", Product: "NVIDIA H100 80GB HBM3", Probed: true, Lost: true},
			Verdict: lost,
			Health: gpu.Health{State: gpu.Unhealthy, Evidence: lost.Evidence, FaultAt: t0.Add(time.Second),
				NextProbe: t0.Add(11 * time.Second), Backoff: 10 * time.Second},
		},
		{Sample: healthySample(1, "GPU-fine"), Verdict: gpu.Verdict{State: gpu.Healthy}, Health: gpu.Health{State: gpu.Healthy}},
		{
			// Lost since Start, found so by the first poll, and in back-off now: not asked.
			Sample:  gpu.Sample{Index: 2},
			Verdict: gpu.Verdict{State: gpu.Healthy},
			Health: gpu.Health{State: gpu.Unhealthy, Evidence: lost.Evidence, FaultAt: t0,
				NextProbe: t0.Add(10 * time.Second), Backoff: 10 * time.Second},
		},
	}
	if diff := cmp.Diff(want, r.GPUs); diff != "" {
		t.Errorf("Poll().GPUs (-want +got):\n%s", diff)
	}
	// The lost GPU is not asked anything after its first ERROR_GPU_IS_LOST: each call can be slow.
	if n := len(falling.dev.GetUtilizationRatesCalls()); n != 1 {
		t.Errorf("GetUtilizationRates calls on the lost GPU = %d, want 1 (first poll only)", n)
	}
}

func TestStartErrors(t *testing.T) {
	cases := map[string]struct {
		init nvml.Return
		want string
	}{
		"no library": {
			init: nvml.ERROR_LIBRARY_NOT_FOUND,
			want: "initializing NVML: libnvidia-ml.so.1 not found: is the NVIDIA driver installed, and its library mounted into this container?: ERROR_LIBRARY_NOT_FOUND",
		},
		"no driver": {
			init: nvml.ERROR_DRIVER_NOT_LOADED,
			want: "initializing NVML: the NVIDIA kernel driver is not loaded: ERROR_DRIVER_NOT_LOADED",
		},
		"driver upgraded without reboot": {
			init: nvml.ERROR_LIB_RM_VERSION_MISMATCH,
			want: "initializing NVML: libnvidia-ml and the loaded NVIDIA kernel driver are different versions (driver upgraded without a reboot?): ERROR_LIB_RM_VERSION_MISMATCH",
		},
		"no permission": {
			init: nvml.ERROR_NO_PERMISSION,
			want: "initializing NVML: no permission to open the NVIDIA devices: ERROR_NO_PERMISSION",
		},
		"other": {
			init: nvml.ERROR_UNKNOWN,
			want: "initializing NVML: ERROR_UNKNOWN",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFakeNVML(healthyGPU("GPU-0"))
			f.initRet = tc.init
			c := New(f.lib, testingclock.NewFakeClock(t0), Options{})
			err := c.Start()
			if err == nil {
				t.Fatal("Start() = nil, want an error")
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("Start() error (-want +got):\n%s", diff)
			}
			if !errors.Is(err, tc.init) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.init)
			}
			if n := len(f.lib.DeviceGetCountCalls()); n != 0 {
				t.Errorf("DeviceGetCount calls = %d, want none after a failed Init", n)
			}
			if diff := cmp.Diff([]string{"collector not started"}, c.Poll().Errors); diff != "" {
				t.Errorf("Poll().Errors (-want +got):\n%s", diff)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close() = %v", err)
			}
			if n := len(f.lib.ShutdownCalls()); n != 0 {
				t.Errorf("Shutdown calls = %d, want none: NVML never started", n)
			}
		})
	}
}

func TestStartCountFails(t *testing.T) {
	f := newFakeNVML(healthyGPU("GPU-0"))
	f.lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	err := New(f.lib, testingclock.NewFakeClock(t0), Options{}).Start()
	if diff := cmp.Diff("counting GPUs with NVML: ERROR_UNKNOWN", errString(err)); diff != "" {
		t.Errorf("Start() (-want +got):\n%s", diff)
	}
	if n := len(f.lib.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown calls = %d, want 1: NVML was initialised", n)
	}
}

func TestWithoutXIDEvents(t *testing.T) {
	t.Run("no event set", func(t *testing.T) {
		f := newFakeNVML(healthyGPU("GPU-0"))
		f.eventSetRet = nvml.ERROR_UNKNOWN
		c, _ := start(t, f, Options{})
		r := c.Poll()
		if diff := cmp.Diff([]string{"xid events unavailable: creating the NVML event set: ERROR_UNKNOWN"}, r.Errors); diff != "" {
			t.Errorf("Poll().Errors (-want +got):\n%s", diff)
		}
		if got := r.GPUs[0].Verdict.State; got != gpu.Healthy {
			t.Errorf("verdict = %s, want Healthy: the GPU is still read", got)
		}
	})
	t.Run("registering fails", func(t *testing.T) {
		g := healthyGPU("GPU-0")
		g.rets = map[string]nvml.Return{"RegisterEvents": nvml.ERROR_UNKNOWN}
		c, _ := start(t, newFakeNVML(g), Options{})
		r := c.Poll()
		if diff := cmp.Diff([]string{"xid events unavailable: RegisterEvents: ERROR_UNKNOWN"}, r.GPUs[0].Sample.Errors); diff != "" {
			t.Errorf("sample errors (-want +got):\n%s", diff)
		}
	})
	t.Run("XID events not supported", func(t *testing.T) {
		g := healthyGPU("GPU-0")
		g.events = nvml.EventTypeSingleBitEccError
		c, _ := start(t, newFakeNVML(g), Options{})
		if got := c.Poll().GPUs[0].Sample.Errors; got != nil {
			t.Errorf("sample errors = %q, want none", got)
		}
		if n := len(g.dev.RegisterEventsCalls()); n != 0 {
			t.Errorf("RegisterEvents calls = %d, want none", n)
		}
	})
	t.Run("registered when the GPU answers again", func(t *testing.T) {
		g := healthyGPU("GPU-0")
		g.lostHandle = true
		f := newFakeNVML(g)
		c, _ := start(t, f, Options{Recovery: &gpu.RecoveryPolicy{}})
		c.Poll()
		g.lostHandle = false
		c.Poll()
		calls := g.dev.RegisterEventsCalls()
		if len(calls) != 1 || calls[0].V != nvml.EventTypeXidCriticalError {
			t.Errorf("RegisterEvents calls = %+v, want one for XID critical errors", calls)
		}
	})
}

func TestWaitXIDs(t *testing.T) {
	f := newFakeNVML(healthyGPU("GPU-0"))
	c, _ := start(t, f, Options{})
	if c.WaitXIDs(2 * time.Second) {
		t.Error("WaitXIDs() = true with no event")
	}
	f.xid(0, 13)
	f.xid(0, 79)
	if !c.WaitXIDs(2 * time.Second) {
		t.Error("WaitXIDs() = false, want true")
	}
	var timeouts []uint32
	for _, call := range f.set.WaitCalls() {
		timeouts = append(timeouts, call.V)
	}
	// Each WaitXIDs waits once, then takes what is queued without waiting.
	if diff := cmp.Diff([]uint32{2000, 2000, 0, 0}, timeouts); diff != "" {
		t.Errorf("Wait timeouts in ms (-want +got):\n%s", diff)
	}
	r := c.Poll()
	if diff := cmp.Diff(unhealthyXID(79, "xid 79 (GPU has fallen off the bus)"), r.GPUs[0].Verdict); diff != "" {
		t.Errorf("verdict after WaitXIDs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{13, 79}, r.GPUs[0].Sample.XIDs); diff != "" {
		t.Errorf("XIDs (-want +got):\n%s", diff)
	}
}

// TestRecovery: an XID makes the GPU Unhealthy; it is re-probed on a back-off while it stays lost;
// once it answers cleanly, it is Healthy again after the quiet period, and a new fault in the quiet
// period starts the period again.
func TestRecovery(t *testing.T) {
	g := healthyGPU("GPU-0")
	f := newFakeNVML(g)
	c, clk := start(t, f, Options{})

	type step struct {
		Probed bool
		Health gpu.Health
	}
	xid79 := []string{"xid 79 (GPU has fallen off the bus)"}
	lost := []string{"gpu lost (ERROR_GPU_IS_LOST)"}
	xid48 := []string{"xid 48 (double bit ECC error)"}
	at := t0.Add
	steps := []struct {
		at   time.Duration
		do   func()
		want step
	}{
		{at: 0, do: func() { f.xid(0, 79) },
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: xid79, FaultAt: at(0), NextProbe: at(10 * time.Second), Backoff: 10 * time.Second}}},
		{at: 5 * time.Second, // in back-off: not asked
			want: step{false, gpu.Health{State: gpu.Unhealthy, Evidence: xid79, FaultAt: at(0), NextProbe: at(10 * time.Second), Backoff: 10 * time.Second}}},
		{at: 10 * time.Second, do: func() { g.lost = true },
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: lost, FaultAt: at(10 * time.Second), NextProbe: at(30 * time.Second), Backoff: 20 * time.Second}}},
		{at: 30 * time.Second,
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: lost, FaultAt: at(30 * time.Second), NextProbe: at(70 * time.Second), Backoff: 40 * time.Second}}},
		{at: 70 * time.Second, do: func() { g.lost = false }, // reset: answers cleanly, the quiet period starts
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: lost, FaultAt: at(30 * time.Second), QuietSince: at(70 * time.Second), NextProbe: at(80 * time.Second), Backoff: 10 * time.Second}}},
		{at: 70*time.Second + 9*time.Minute + 50*time.Second,
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: lost, FaultAt: at(30 * time.Second), QuietSince: at(70 * time.Second), NextProbe: at(80*time.Second + 9*time.Minute + 50*time.Second), Backoff: 10 * time.Second}}},
		{at: 70*time.Second + 10*time.Minute, // quiet period over
			want: step{true, gpu.Health{State: gpu.Healthy}}},
		// Again, and a new fault during the quiet period.
		{at: 20 * time.Minute, do: func() { f.xid(0, 79) },
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: xid79, FaultAt: at(20 * time.Minute), NextProbe: at(20*time.Minute + 10*time.Second), Backoff: 10 * time.Second}}},
		{at: 20*time.Minute + 10*time.Second,
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: xid79, FaultAt: at(20 * time.Minute), QuietSince: at(20*time.Minute + 10*time.Second), NextProbe: at(20*time.Minute + 20*time.Second), Backoff: 10 * time.Second}}},
		{at: 25 * time.Minute, do: func() { f.xid(0, 48) }, // the quiet period starts again
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: xid48, FaultAt: at(25 * time.Minute), NextProbe: at(25*time.Minute + 10*time.Second), Backoff: 10 * time.Second}}},
		{at: 25*time.Minute + 10*time.Second,
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: xid48, FaultAt: at(25 * time.Minute), QuietSince: at(25*time.Minute + 10*time.Second), NextProbe: at(25*time.Minute + 20*time.Second), Backoff: 10 * time.Second}}},
		{at: 30*time.Minute + 10*time.Second, // 10 min after the first fault's quiet period began: not yet
			want: step{true, gpu.Health{State: gpu.Unhealthy, Evidence: xid48, FaultAt: at(25 * time.Minute), QuietSince: at(25*time.Minute + 10*time.Second), NextProbe: at(30*time.Minute + 20*time.Second), Backoff: 10 * time.Second}}},
		{at: 35*time.Minute + 10*time.Second,
			want: step{true, gpu.Health{State: gpu.Healthy}}},
	}
	for _, s := range steps {
		clk.SetTime(at(s.at))
		if s.do != nil {
			s.do()
		}
		r := c.Poll()
		got := step{Probed: r.GPUs[0].Sample.Probed, Health: r.GPUs[0].Health}
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("at %v (-want +got):\n%s", s.at, diff)
		}
	}
}

func TestCloseFreesAndShutsDown(t *testing.T) {
	f := newFakeNVML(healthyGPU("GPU-0"))
	c := New(f.lib, testingclock.NewFakeClock(t0), Options{})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	f.set.FreeFunc = func() nvml.Return { return nvml.ERROR_UNKNOWN }
	err := c.Close()
	if diff := cmp.Diff("freeing the NVML event set: ERROR_UNKNOWN", errString(err)); diff != "" {
		t.Errorf("Close() (-want +got):\n%s", diff)
	}
	if n := len(f.lib.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown calls = %d, want 1", n)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The clock event bits gpu judges by are nvml.h's.
func TestClockEventBits(t *testing.T) {
	got := []uint64{gpu.ClockEventSwPowerCap, gpu.ClockEventHwSlowdown, gpu.ClockEventSwThermalSlowdown,
		gpu.ClockEventHwThermalSlowdown, gpu.ClockEventHwPowerBrakeSlowdown}
	want := []uint64{nvml.ClocksEventReasonSwPowerCap, nvml.ClocksThrottleReasonHwSlowdown,
		nvml.ClocksEventReasonSwThermalSlowdown, nvml.ClocksThrottleReasonHwThermalSlowdown,
		nvml.ClocksThrottleReasonHwPowerBrakeSlowdown}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("clock event bits (-want +got):\n%s", diff)
	}
}
