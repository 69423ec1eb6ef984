package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/agentfleet/agentfleet/gpu"
)

// scriptedSource plays reports in turn; its WaitXIDs lets the fake clock run: through the whole
// timeout, or 250 ms when an XID is scripted for the next poll.
type scriptedSource struct {
	clk     *testingclock.FakeClock
	reports []Report
	xidNext []bool
	polls   []time.Time
	cancel  context.CancelFunc
}

func (s *scriptedSource) WaitXIDs(timeout time.Duration) bool {
	if n := len(s.polls); n < len(s.xidNext) && s.xidNext[n] {
		s.clk.Step(250 * time.Millisecond)
		return true
	}
	s.clk.Step(timeout)
	return false
}

func (s *scriptedSource) Poll() Report {
	s.polls = append(s.polls, s.clk.Now())
	r := s.reports[min(len(s.polls), len(s.reports))-1]
	if len(s.polls) == len(s.reports) {
		s.cancel()
	}
	return r
}

type fakeHolders struct {
	answers []map[string][]PodRef
	errs    []error
	n       int
}

func (f *fakeHolders) Holders(context.Context) (map[string][]PodRef, error) {
	i := min(f.n, len(f.answers)-1)
	f.n++
	return f.answers[i], f.errs[i]
}

func TestAgentRun(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	clk := testingclock.NewFakeClock(now)
	healthy := report(testGPU(0, "GPU-0", gpu.Healthy), testGPU(1, "GPU-1", gpu.Healthy), testGPU(2, "GPU-2", gpu.Healthy), testGPU(3, "GPU-3", gpu.Healthy))
	lost := report(testGPU(0, "GPU-0", gpu.Healthy), testGPU(1, "GPU-1", gpu.Healthy), testGPU(2, "GPU-2", gpu.Unhealthy, xid79...), testGPU(3, "GPU-3", gpu.Healthy))
	src := &scriptedSource{clk: clk, cancel: cancel,
		reports: []Report{healthy, healthy, lost, lost},
		xidNext: []bool{false, false, true, false}}
	c := fake.NewClientset(testNode(""), testPod("worker-0"), testPod("worker-1"), testPod("worker-2"))
	pc, err := NewPodCache(ctx, c, "gpu-node-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		NodeName: "gpu-node-1", Source: src, Pods: pc, Clock: clk, PollInterval: 10 * time.Second, Log: logr.Discard(),
		Holders:   &fakeHolders{answers: []map[string][]PodRef{holders}, errs: []error{nil}},
		Publisher: &Publisher{Client: c, NodeName: "gpu-node-1", Clock: clk},
		Metrics:   NewMetrics(),
	}
	a.Run(ctx)
	// At once, after the interval, 250 ms later on the XID, and the interval after the one before.
	want := []time.Time{now, now.Add(10 * time.Second), now.Add(10*time.Second + 250*time.Millisecond), now.Add(20 * time.Second)}
	if diff := cmp.Diff(want, src.polls); diff != "" {
		t.Errorf("poll times (-want +got):\n%s", diff)
	}
	// A metav1.Time is kept to the second.
	pod, err := c.CoreV1().Pods("agents").Get(t.Context(), "worker-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cond := podCondition(pod); cond == nil || cond.Status != corev1.ConditionFalse || !cond.LastTransitionTime.Time.Equal(want[2].Truncate(time.Second)) {
		t.Errorf("worker-2's %s = %+v, want False since the XID's poll", PodCondition, cond)
	}
}

func TestObserveKeepsHoldersWhenTheKubeletFails(t *testing.T) {
	c := fake.NewClientset(testPod("worker-0"), testPod("worker-2"))
	pc, err := NewPodCache(t.Context(), c, "gpu-node-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clk := testingclock.NewFakeClock(now)
	r := report(testGPU(0, "GPU-0", gpu.Healthy))
	a := &Agent{NodeName: "gpu-node-1", Source: &scriptedSource{clk: clk, reports: []Report{r, r}, cancel: func() {}}, Pods: pc,
		Holders: &fakeHolders{answers: []map[string][]PodRef{holders, nil}, errs: []error{nil, errors.New("kubelet restarting")}},
		Clock:   clk, Log: logr.Discard()}
	for i := range 2 {
		obs := a.Observe(t.Context())
		if diff := cmp.Diff(holders, obs.Holders); diff != "" {
			t.Errorf("poll %d: holders (-want +got):\n%s", i, diff)
		}
		// worker-1 is not in the cache: nil, and its condition waits for it.
		if obs.Pods[key("worker-0")] == nil || obs.Pods[key("worker-2")] == nil || obs.Pods[key("worker-1")] != nil {
			t.Errorf("poll %d: pods = %v, want worker-0 and worker-2 from the cache", i, obs.Pods)
		}
	}
}
