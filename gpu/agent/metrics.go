package agent

import (
	"slices"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
)

// Metrics are the per-GPU Prometheus metrics. Each series has the labels node, gpu (NVML's index),
// uuid and product, and namespace, pod and fleet (the pod's agentfleet.dev/fleet label) while a pod
// holds the GPU (empty otherwise), so that used-vs-allocated needs no join. A time-sliced GPU held
// by several pods has a series per pod, with the same values.
//
// Metrics is a prometheus.Collector that serves the latest poll: a GPU that is gone, or a pod that
// no longer holds it, leaves no stale series. The XID counter counts per holder: a new holder's
// series starts from zero.
type Metrics struct {
	mu     sync.Mutex
	series []series
	// xids counts XID events by the labels of the GPU's series and the code.
	xids map[xidKey]float64
}

type series struct {
	labels                               [7]string // in the order of gpuLabels
	util, memUsed, memTotal, temp, power gpu.Reading[float64]
	state                                string
}

type xidKey struct {
	labels [7]string
	code   string
}

var gpuLabels = []string{"node", "gpu", "uuid", "product", "namespace", "pod", "fleet"}

var (
	descUtil = prometheus.NewDesc("agentfleet_gpu_utilization_ratio",
		"Fraction of the last sample period in which a kernel ran on the GPU (NVML's GPU utilization).", gpuLabels, nil)
	descMemUsed = prometheus.NewDesc("agentfleet_gpu_memory_used_bytes",
		"GPU memory in use.", gpuLabels, nil)
	descMemTotal = prometheus.NewDesc("agentfleet_gpu_memory_total_bytes",
		"GPU memory in all.", gpuLabels, nil)
	descTemp = prometheus.NewDesc("agentfleet_gpu_temperature_celsius",
		"GPU core temperature.", gpuLabels, nil)
	descPower = prometheus.NewDesc("agentfleet_gpu_power_watts",
		"GPU power draw.", gpuLabels, nil)
	descXID = prometheus.NewDesc("agentfleet_gpu_xid_errors_total",
		"XID events of the GPU by XID code, ignored ones included, counted while the labelled pod held it.",
		append(slices.Clone(gpuLabels), "code"), nil)
	descHealth = prometheus.NewDesc("agentfleet_gpu_health",
		"GPU health as the agent publishes it: 1 for the current state (healthy, degraded, unhealthy), 0 for the others.",
		append(slices.Clone(gpuLabels), "state"), nil)
)

var healthStates = []string{HealthHealthy, HealthDegraded, gpu.HealthUnhealthy}

// NewMetrics returns Metrics with no poll yet; register them with a prometheus.Registerer.
func NewMetrics() *Metrics { return &Metrics{xids: map[xidKey]float64{}} }

// Update replaces the series with those of obs and counts its XID events.
func (m *Metrics) Update(obs Observation) {
	var ss []series
	var events []xidKey
	for _, g := range obs.Report.GPUs {
		s := g.Sample
		base := series{
			state:    healthValue(g.Health.State),
			util:     ratio(s.UtilizationGPUPercent),
			memUsed:  float(s.MemoryUsedBytes),
			memTotal: float(s.MemoryTotalBytes),
			temp:     float(s.TemperatureC),
		}
		if p := s.PowerMilliwatts; p.Valid {
			base.power = gpu.Valid(float64(p.Value) / 1000)
		}
		refs := obs.Holders[s.UUID]
		if s.UUID == "" || len(refs) == 0 {
			refs = []PodRef{{}}
		}
		var seen []PodRef
		for _, ref := range refs {
			ref.Container = "" // one series per pod
			if slices.Contains(seen, ref) {
				continue
			}
			seen = append(seen, ref)
			se := base
			se.labels = [7]string{obs.NodeName, strconv.Itoa(s.Index), s.UUID, s.Product, ref.Namespace, ref.Name}
			if pod := obs.Pods[ref.Key()]; pod != nil {
				se.labels[6] = pod.Labels[v1alpha1.LabelFleet]
			}
			ss = append(ss, se)
			for _, x := range s.XIDs {
				events = append(events, xidKey{labels: se.labels, code: strconv.FormatUint(x, 10)})
			}
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	m.series = ss
	current := make(map[[7]string]bool, len(ss))
	for _, s := range ss {
		current[s.labels] = true
	}
	for k := range m.xids {
		if !current[k.labels] {
			delete(m.xids, k) // the GPU is gone, or another pod holds it now
		}
	}
	for _, k := range events {
		m.xids[k]++
	}
}

func ratio(r gpu.Reading[uint32]) gpu.Reading[float64] {
	if !r.Valid {
		return gpu.Reading[float64]{}
	}
	return gpu.Valid(float64(r.Value) / 100)
}

func float[T uint32 | uint64](r gpu.Reading[T]) gpu.Reading[float64] {
	if !r.Valid {
		return gpu.Reading[float64]{}
	}
	return gpu.Valid(float64(r.Value))
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUtil, descMemUsed, descMemTotal, descTemp, descPower, descXID, descHealth} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.series {
		l := s.labels[:]
		for _, g := range []struct {
			d *prometheus.Desc
			r gpu.Reading[float64]
		}{{descUtil, s.util}, {descMemUsed, s.memUsed}, {descMemTotal, s.memTotal}, {descTemp, s.temp}, {descPower, s.power}} {
			if g.r.Valid {
				ch <- prometheus.MustNewConstMetric(g.d, prometheus.GaugeValue, g.r.Value, l...)
			}
		}
		for _, st := range healthStates {
			v := 0.0
			if st == s.state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descHealth, prometheus.GaugeValue, v, append(slices.Clone(l), st)...)
		}
	}
	for k, v := range m.xids {
		ch <- prometheus.MustNewConstMetric(descXID, prometheus.CounterValue, v, append(k.labels[:], k.code)...)
	}
}
