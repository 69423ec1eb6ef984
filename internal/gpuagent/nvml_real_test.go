//go:build nvml

package gpuagent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"

	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/gpu/agent"
	"github.com/agentfleet/agentfleet/gpu/collector"
)

// TestRealNVMLAgentPoll runs the agent's whole poll on a machine with NVIDIA GPUs: the real NVML
// behind the collector, the Plan, the Publisher (on a fake API server: this test needs no cluster)
// and the metrics. It checks that the node gets its GPUHealthy condition and label, agreeing with
// each other, and that every GPU has its series; its -v output is a report of the real GPUs.
// `make test-nvml` runs it with the collector's TestRealNVML.
func TestRealNVMLAgentPoll(t *testing.T) {
	// The command's own flag defaults, so that this test (built only with the nvml tag) cannot
	// drift from them: it once did, when --reprobe-backoff was added.
	var o options
	if err := newFlags(&o, func(string) string { return "" }).Parse([]string{"--node-name=gpu-node"}); err != nil {
		t.Fatal(err)
	}
	copts, err := o.validate()
	if err != nil {
		t.Fatal(err)
	}
	c := collector.New(nvml.New(), clock.RealClock{}, copts)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-node"}})
	metrics := agent.NewMetrics()
	a := &agent.Agent{
		NodeName: "gpu-node", Source: source{c},
		Publisher: &agent.Publisher{Client: client, NodeName: "gpu-node", Clock: clock.RealClock{}, HeartbeatPeriod: agent.DefaultHeartbeatPeriod},
		Metrics:   metrics, PollInterval: o.pollInterval, Clock: clock.RealClock{},
	}
	start := time.Now()
	a.PollOnce(context.Background())
	t.Logf("one poll and publish took %s", time.Since(start))

	node, err := client.CoreV1().Nodes().Get(context.Background(), "gpu-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cond *corev1.NodeCondition
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == agent.NodeCondition {
			cond = &node.Status.Conditions[i]
		}
	}
	if cond == nil {
		t.Fatalf("no %s condition on the node: %+v", agent.NodeCondition, node.Status.Conditions)
	}
	label := node.Labels[gpu.HealthLabel]
	t.Logf("node condition %s=%s reason %s: %s; label %s=%s", cond.Type, cond.Status, cond.Reason, cond.Message, gpu.HealthLabel, label)
	wantLabel := map[string]string{agent.ReasonGPUsHealthy: gpu.HealthHealthy, agent.ReasonGPUDegraded: gpu.HealthDegraded, agent.ReasonGPUUnhealthy: gpu.HealthUnhealthy}[cond.Reason]
	if wantLabel == "" || label != wantLabel {
		t.Errorf("condition reason %s with label %q: they disagree", cond.Reason, label)
	}
	if (cond.Status == corev1.ConditionFalse) != (cond.Reason == agent.ReasonGPUUnhealthy) {
		t.Errorf("condition status %s with reason %s", cond.Status, cond.Reason)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range families {
		if mf.GetName() != "agentfleet_gpu_memory_total_bytes" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			t.Logf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), m.GetGauge().GetValue())
			if m.GetGauge().GetValue() <= 0 {
				t.Errorf("memory total %g", m.GetGauge().GetValue())
			}
			n++
		}
	}
	if n == 0 {
		t.Error("no agentfleet_gpu_memory_total_bytes series")
	}
}
