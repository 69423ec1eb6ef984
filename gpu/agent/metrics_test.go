package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/agentfleet/agentfleet/gpu"
)

// busyGPU is a probed GPU with every reading.
func busyGPU(index int, uuid string, st gpu.State, xids ...uint64) GPU {
	g := testGPU(index, uuid, st)
	g.Sample.UtilizationGPUPercent = gpu.Valid[uint32](75)
	g.Sample.MemoryUsedBytes = gpu.Valid[uint64](40 << 30)
	g.Sample.MemoryTotalBytes = gpu.Valid[uint64](80 << 30)
	g.Sample.TemperatureC = gpu.Valid[uint32](61)
	g.Sample.PowerMilliwatts = gpu.Valid[uint32](412_500)
	g.Sample.XIDs = xids
	return g
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)

	// GPU-0 held by worker-0 of fleet coders, with an ignored XID 13; GPU-2 lost and in its back-off
	// (not probed: no readings) with XID 79 twice; GPU-4 free.
	lost := testGPU(2, "GPU-2", gpu.Unhealthy, xid79...)
	lost.Sample.Probed = false
	lost.Sample.XIDs = []uint64{79, 79}
	obs := Observation{
		NodeName: "gpu-node-1",
		Report:   report(busyGPU(0, "GPU-0", gpu.Healthy, 13), lost, busyGPU(4, "GPU-4", gpu.Degraded)),
		Holders:  holders,
		Pods:     pods(testPod("worker-0"), testPod("worker-2")),
	}
	m.Update(obs)
	const head = `
# HELP agentfleet_gpu_health GPU health as the agent publishes it: 1 for the current state (healthy, degraded, unhealthy), 0 for the others.
# TYPE agentfleet_gpu_health gauge
# HELP agentfleet_gpu_memory_used_bytes GPU memory in use.
# TYPE agentfleet_gpu_memory_used_bytes gauge
# HELP agentfleet_gpu_power_watts GPU power draw.
# TYPE agentfleet_gpu_power_watts gauge
# HELP agentfleet_gpu_utilization_ratio Fraction of the last sample period in which a kernel ran on the GPU (NVML's GPU utilization).
# TYPE agentfleet_gpu_utilization_ratio gauge
# HELP agentfleet_gpu_xid_errors_total XID events of the GPU by XID code, ignored ones included, counted while the labelled pod held it.
# TYPE agentfleet_gpu_xid_errors_total counter
`
	const gpu0 = `fleet="coders",gpu="0",namespace="agents",node="gpu-node-1",pod="worker-0",product="NVIDIA H100 80GB HBM3",uuid="GPU-0"`
	const gpu2 = `fleet="coders",gpu="2",namespace="agents",node="gpu-node-1",pod="worker-2",product="NVIDIA H100 80GB HBM3",uuid="GPU-2"`
	const gpu4 = `fleet="",gpu="4",namespace="",node="gpu-node-1",pod="",product="NVIDIA H100 80GB HBM3",uuid="GPU-4"`
	want := head + `
` + health(gpu0, "degraded", 0) + `
` + health(gpu0, "healthy", 1) + `
` + health(gpu0, "unhealthy", 0) + `
` + health(gpu2, "degraded", 0) + `
` + health(gpu2, "healthy", 0) + `
` + health(gpu2, "unhealthy", 1) + `
` + health(gpu4, "degraded", 1) + `
` + health(gpu4, "healthy", 0) + `
` + health(gpu4, "unhealthy", 0) + `
agentfleet_gpu_memory_used_bytes{` + gpu0 + `} 4.294967296e+10
agentfleet_gpu_memory_used_bytes{` + gpu4 + `} 4.294967296e+10
agentfleet_gpu_power_watts{` + gpu0 + `} 412.5
agentfleet_gpu_power_watts{` + gpu4 + `} 412.5
agentfleet_gpu_utilization_ratio{` + gpu0 + `} 0.75
agentfleet_gpu_utilization_ratio{` + gpu4 + `} 0.75
agentfleet_gpu_xid_errors_total{code="13",` + gpu0 + `} 1
agentfleet_gpu_xid_errors_total{code="79",` + gpu2 + `} 2
`
	names := []string{"agentfleet_gpu_health", "agentfleet_gpu_memory_used_bytes", "agentfleet_gpu_power_watts",
		"agentfleet_gpu_utilization_ratio", "agentfleet_gpu_xid_errors_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	// Next poll: another XID 79 on GPU-2, worker-0 is gone and GPU-0 free: its series lose the pod,
	// and its XID count, which was worker-0's, goes with it.
	obs.Report.GPUs[0].Sample.XIDs = nil
	obs.Report.GPUs[1].Sample.XIDs = []uint64{79}
	obs.Holders = map[string][]PodRef{"GPU-2": holders["GPU-2"]}
	m.Update(obs)
	const gpu0Free = `fleet="",gpu="0",namespace="",node="gpu-node-1",pod="",product="NVIDIA H100 80GB HBM3",uuid="GPU-0"`
	want = head + `
` + health(gpu0Free, "degraded", 0) + `
` + health(gpu0Free, "healthy", 1) + `
` + health(gpu0Free, "unhealthy", 0) + `
` + health(gpu2, "degraded", 0) + `
` + health(gpu2, "healthy", 0) + `
` + health(gpu2, "unhealthy", 1) + `
` + health(gpu4, "degraded", 1) + `
` + health(gpu4, "healthy", 0) + `
` + health(gpu4, "unhealthy", 0) + `
agentfleet_gpu_memory_used_bytes{` + gpu0Free + `} 4.294967296e+10
agentfleet_gpu_memory_used_bytes{` + gpu4 + `} 4.294967296e+10
agentfleet_gpu_power_watts{` + gpu0Free + `} 412.5
agentfleet_gpu_power_watts{` + gpu4 + `} 412.5
agentfleet_gpu_utilization_ratio{` + gpu0Free + `} 0.75
agentfleet_gpu_utilization_ratio{` + gpu4 + `} 0.75
agentfleet_gpu_xid_errors_total{code="79",` + gpu2 + `} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m, "agentfleet_gpu_temperature_celsius", "agentfleet_gpu_memory_total_bytes"); n != 4 {
		t.Errorf("temperature and memory total series = %d, want 4 (GPU-0 and GPU-4; GPU-2 was not probed)", n)
	}
}

// health is a line of agentfleet_gpu_health: labels are in alphabetical order, "state" before "uuid".
func health(labels, state string, v int) string {
	before, uuid, _ := strings.Cut(labels, `,uuid=`)
	return fmt.Sprintf(`agentfleet_gpu_health{%s,state=%q,uuid=%s} %d`, before, state, uuid, v)
}

func TestMetricsTimeSlicedGPU(t *testing.T) {
	m := NewMetrics()
	m.Update(Observation{NodeName: "n", Report: report(busyGPU(5, "GPU-5", gpu.Healthy, 31)), Holders: kubeletHolders})
	// One series per pod sharing the GPU, each counting the XID.
	if n := testutil.CollectAndCount(m, "agentfleet_gpu_utilization_ratio"); n != 2 {
		t.Errorf("utilization series = %d, want 2", n)
	}
	if n := testutil.CollectAndCount(m, "agentfleet_gpu_xid_errors_total"); n != 2 {
		t.Errorf("xid series = %d, want 2", n)
	}
}

func TestMetricsLint(t *testing.T) {
	m := NewMetrics()
	m.Update(Observation{NodeName: "n", Report: report(busyGPU(0, "GPU-0", gpu.Healthy, 79)), Holders: holders, Pods: pods(testPod("worker-0"))})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 7 {
		t.Errorf("gathered %d metric families, want 7", len(mfs))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
