package heartbeat_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/sdk/go/heartbeat"
)

const (
	namespace = "agents"
	fleet     = "research"
	pod       = "research-agents-worker-001"
	interval  = 10 * time.Second
)

// t0 is the fake clock's start; no test reads the real clock.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var leasesResource = coordinationv1.SchemeGroupVersion.WithResource("leases")

// harness is a client on a fake clientset and a fake clock, and every Lease write it makes.
type harness struct {
	t       *testing.T
	cs      *fake.Clientset
	clock   *clocktesting.FakeClock
	hb      *heartbeat.Client
	written chan *coordinationv1.Lease // each Lease created or updated, once stored
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, cs: fake.NewClientset(), clock: clocktesting.NewFakeClock(t0), written: make(chan *coordinationv1.Lease, 1000)}
	tracker := h.cs.Tracker()
	store := k8stesting.ObjectReaction(tracker)
	version := 0 // the fake serialises reactors: no lock needed
	// The API server's optimistic concurrency, which the fake's tracker lacks: every write stamps a
	// new resourceVersion, and an update of any other is a conflict.
	h.cs.PrependReactor("*", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		verb := a.GetVerb()
		if verb == "create" || verb == "update" {
			l := a.(interface{ GetObject() runtime.Object }).GetObject().(*coordinationv1.Lease).DeepCopy()
			if verb == "update" {
				if cur, err := tracker.Get(leasesResource, l.Namespace, l.Name); err == nil && cur.(*coordinationv1.Lease).ResourceVersion != l.ResourceVersion {
					return true, nil, apierrors.NewConflict(leasesResource.GroupResource(), l.Name, errors.New("the object has been modified"))
				}
			}
			version++
			l.ResourceVersion = strconv.Itoa(version)
			if verb == "create" {
				a = k8stesting.NewCreateAction(leasesResource, a.GetNamespace(), l)
			} else {
				a = k8stesting.NewUpdateAction(leasesResource, a.GetNamespace(), l)
			}
		}
		handled, obj, err := store(a)
		if err != nil {
			return handled, obj, err
		}
		switch verb {
		case "create", "update":
			h.written <- obj.(*coordinationv1.Lease).DeepCopy()
		case "patch":
			l := obj.(*coordinationv1.Lease)
			version++
			l.ResourceVersion = strconv.Itoa(version)
			if err := tracker.Update(leasesResource, l, l.Namespace); err != nil {
				return true, nil, err
			}
		}
		return handled, obj, err
	})
	h.hb = heartbeat.New(h.cs, namespace, fleet, pod, interval).WithClock(h.clock)
	return h
}

// writes counts the Lease writes so far.
func (h *harness) writes() int {
	n := 0
	for _, a := range h.cs.Actions() {
		if a.GetResource().Resource == "leases" && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			n++
		}
	}
	return n
}

// count counts the API calls on Leases with verb so far, failed ones included.
func (h *harness) count(verb string) int {
	n := 0
	for _, a := range h.cs.Actions() {
		if a.GetResource().Resource == "leases" && a.GetVerb() == verb {
			n++
		}
	}
	return n
}

// operator patches the Lease as the operator does: a JSON merge patch of metadata.annotations
// only, in which nil removes an annotation.
func (h *harness) operator(annotations map[string]*string) {
	h.t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.cs.CoordinationV1().Leases(namespace).Patch(h.t.Context(), pod, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		h.t.Fatalf("patching the Lease as the operator: %v", err)
	}
}

// stored is the Lease as the API server has it.
func (h *harness) stored() *coordinationv1.Lease {
	h.t.Helper()
	l, err := h.cs.CoordinationV1().Leases(namespace).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		h.t.Fatalf("getting the Lease: %v", err)
	}
	return l
}

// renewal moves the clock by d and returns the Lease the renewal wrote. The writes so far were
// made synchronously, so all of them are in written already and are dropped first.
func (h *harness) renewal(d time.Duration) *coordinationv1.Lease {
	h.t.Helper()
	for len(h.written) > 0 {
		<-h.written
	}
	h.clock.Step(d)
	select {
	case l := <-h.written:
		return l
	case <-time.After(10 * time.Second): // a deadline for a failing test only; a pass never waits for it
		h.t.Fatalf("no renewal %s after the clock moved by %s", interval, d)
		return nil
	}
}

func annotations(state string, steps, taskSteps, repeats int, lastStep *time.Time) map[string]string {
	a := map[string]string{
		heartbeatapi.AnnotationState:         state,
		heartbeatapi.AnnotationSteps:         strconv.Itoa(steps),
		heartbeatapi.AnnotationTaskSteps:     strconv.Itoa(taskSteps),
		heartbeatapi.AnnotationActionRepeats: strconv.Itoa(repeats),
	}
	if lastStep != nil {
		a[heartbeatapi.AnnotationLastStepTime] = lastStep.Format(heartbeatapi.TimeFormat)
	}
	return a
}

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

// started adds the task's start to annotations.
func started(a map[string]string, t *time.Time) map[string]string {
	return with(a, heartbeatapi.AnnotationTaskStarted, t.Format(heartbeatapi.TimeFormat))
}

// with adds key, value pairs to annotations.
func with(a map[string]string, kv ...string) map[string]string {
	for i := 0; i < len(kv); i += 2 {
		a[kv[i]] = kv[i+1]
	}
	return a
}

func TestStartWritesTheLease(t *testing.T) {
	h := newHarness(t)
	if err := h.hb.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	l := h.stored()
	now := metav1.NewMicroTime(t0)
	want := coordinationv1.LeaseSpec{HolderIdentity: ptr.To(pod), LeaseDurationSeconds: ptr.To(int32(10)), AcquireTime: &now, RenewTime: &now}
	if diff := cmp.Diff(want, l.Spec); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{heartbeatapi.LabelFleet: fleet}, l.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(annotations(heartbeatapi.StateIdle, 0, 0, 0, nil), l.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if got := h.writes(); got != 1 {
		t.Errorf("writes = %d, want 1", got)
	}
}

// op is something an agent does: a step, going idle, or time passing (less than an interval).
type op func(ctx context.Context, h *harness) error

func step(action string) op {
	return func(ctx context.Context, h *harness) error { return h.hb.Step(ctx, action) }
}

func done(ok bool) op {
	return func(ctx context.Context, h *harness) error { return h.hb.TaskDone(ctx, ok) }
}

func tokens(in, out int) op {
	return func(ctx context.Context, h *harness) error { return h.hb.Tokens(ctx, in, out) }
}

func idle() op { return func(ctx context.Context, h *harness) error { return h.hb.Idle(ctx) } }

func wait(d time.Duration) op {
	return func(_ context.Context, h *harness) error { h.clock.Step(d); return nil }
}

// The counts, state and last step time a run of steps leaves, as the next renewal writes them,
// and which of the steps were written at once.
func TestStepsAndIdle(t *testing.T) {
	cases := map[string]struct {
		ops []op
		// wantWrites are the writes the ops made at once (Start's excluded).
		wantWrites int
		want       map[string]string
	}{
		"a step from idle starts a task, written at once": {
			ops: []op{step("a")}, wantWrites: 1,
			want: started(annotations(heartbeatapi.StateWorking, 1, 1, 1, at(0)), at(0)),
		},
		"the same action again is a repeat": {
			ops: []op{step("a"), wait(time.Second), step("a"), wait(time.Second), step("a")}, wantWrites: 1,
			want: started(annotations(heartbeatapi.StateWorking, 3, 3, 3, at(2*time.Second)), at(0)),
		},
		"another action ends the run of repeats": {
			ops: []op{step("a"), step("a"), step("b")}, wantWrites: 1,
			want: started(annotations(heartbeatapi.StateWorking, 3, 3, 1, at(0)), at(0)),
		},
		"a run of repeats counts from the last change": {
			ops: []op{step("a"), step("b"), step("b")}, wantWrites: 1,
			want: started(annotations(heartbeatapi.StateWorking, 3, 3, 2, at(0)), at(0)),
		},
		"idle ends the task, written at once": {
			ops: []op{step("a"), step("a"), wait(2 * time.Second), idle()}, wantWrites: 2,
			want: annotations(heartbeatapi.StateIdle, 2, 0, 0, at(0)),
		},
		"idle when idle writes nothing": {
			ops: []op{idle()}, wantWrites: 0,
			want: annotations(heartbeatapi.StateIdle, 0, 0, 0, nil),
		},
		"a step after idle starts a new task, written at once; the same action is no repeat": {
			ops: []op{step("a"), step("a"), idle(), wait(time.Second), step("a")}, wantWrites: 3,
			want: started(annotations(heartbeatapi.StateWorking, 3, 1, 1, at(time.Second)), at(time.Second)),
		},
		"a task's outcome ends it, written at once, and outcomes count up": {
			ops: []op{step("a"), done(true), step("b"), done(false), step("c"), done(true)}, wantWrites: 6,
			want: with(annotations(heartbeatapi.StateIdle, 3, 0, 0, at(0)),
				heartbeatapi.AnnotationTasksSucceeded, "2", heartbeatapi.AnnotationTasksFailed, "1"),
		},
		"tokens add up, per task and in all, and wait for the renewal": {
			ops: []op{step("a"), tokens(1000, 200), tokens(500, 100), done(true), wait(time.Second), step("b"), tokens(10, 5)}, wantWrites: 3,
			want: started(with(annotations(heartbeatapi.StateWorking, 2, 1, 1, at(time.Second)),
				heartbeatapi.AnnotationTasksSucceeded, "1", heartbeatapi.AnnotationTasksFailed, "0",
				heartbeatapi.AnnotationTokensIn, "1510", heartbeatapi.AnnotationTokensOut, "305", heartbeatapi.AnnotationTaskTokens, "15"), at(time.Second)),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			ctx := t.Context()
			if err := h.hb.Start(ctx); err != nil {
				t.Fatal(err)
			}
			for _, o := range tc.ops {
				if err := o(ctx, h); err != nil {
					t.Fatal(err)
				}
			}
			if got := h.writes() - 1; got != tc.wantWrites {
				t.Errorf("writes at once = %d, want %d", got, tc.wantWrites)
			}
			renewed := h.renewal(interval)
			if diff := cmp.Diff(tc.want, renewed.Annotations); diff != "" {
				t.Errorf("annotations of the next renewal (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAStepFromIdleIsWrittenAtOnce(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	if err := h.hb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h.clock.Step(3 * time.Second)
	if err := h.hb.Step(ctx, "search: kubernetes leases"); err != nil {
		t.Fatal(err)
	}
	l := h.stored()
	if diff := cmp.Diff(started(annotations(heartbeatapi.StateWorking, 1, 1, 1, at(3*time.Second)), at(3*time.Second)), l.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if got, want := l.Spec.RenewTime.Time, t0.Add(3*time.Second); !got.Equal(want) {
		t.Errorf("renewTime = %s, want %s", got, want)
	}
}

// However fast an agent steps, it writes about once per interval.
func TestStepsWithinAnIntervalAreCoalesced(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	if err := h.hb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.hb.Step(ctx, "step 0"); err != nil { // from idle: written at once
		t.Fatal(err)
	}
	for i := 1; i < 100; i++ { // 99 steps, 100 ms apart: 9.9 s, within the interval
		h.clock.Step(100 * time.Millisecond)
		if err := h.hb.Step(ctx, "step "+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.writes(); got != 2 {
		t.Fatalf("writes after 100 steps within an interval = %d, want 2 (Start, the first step)", got)
	}
	renewed := h.renewal(100 * time.Millisecond) // the interval ends
	if diff := cmp.Diff(started(annotations(heartbeatapi.StateWorking, 100, 100, 1, at(9900*time.Millisecond)), at(0)), renewed.Annotations); diff != "" {
		t.Errorf("the renewal (-want +got):\n%s", diff)
	}
	if got := h.writes(); got != 3 {
		t.Errorf("writes = %d, want 3", got)
	}
}

// Tokens reported however often add no writes of their own within an interval, and negative ones
// are refused.
func TestTokensWithinAnIntervalAreCoalesced(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	if err := h.hb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.hb.Step(ctx, "plan"); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		h.clock.Step(50 * time.Millisecond)
		if err := h.hb.Tokens(ctx, 10, 1); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.writes(); got != 2 {
		t.Errorf("writes after 100 token reports within an interval = %d, want 2 (Start, the first step)", got)
	}
	if err := h.hb.Tokens(ctx, -1, 0); err == nil {
		t.Error("negative tokens were accepted")
	}
}

func TestRenewsEveryInterval(t *testing.T) {
	h := newHarness(t)
	if err := h.hb.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		l := h.renewal(interval)
		if got, want := l.Spec.RenewTime.Time, t0.Add(time.Duration(i)*interval); !got.Equal(want) {
			t.Errorf("renewal %d: renewTime = %s, want %s", i, got, want)
		}
		if diff := cmp.Diff(annotations(heartbeatapi.StateIdle, 0, 0, 0, nil), l.Annotations); diff != "" {
			t.Errorf("renewal %d: annotations (-want +got):\n%s", i, diff)
		}
		if got := h.writes(); got != 1+i {
			t.Errorf("after renewal %d: writes = %d, want %d", i, got, 1+i)
		}
	}
}

// When the agent's ctx ends, the renewals stop and nothing more is written.
func TestCancellationStopsTheWrites(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(t.Context())
	if err := h.hb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.hb.Step(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-heartbeat.RenewalsStopped(h.hb):
	case <-time.After(10 * time.Second): // a deadline for a failing test only
		t.Fatal("the renewals did not stop when the ctx ended")
	}
	before := h.writes()
	h.clock.Step(3 * interval)
	if err := h.hb.Step(ctx, "b"); err != nil {
		t.Errorf("Step with an ended ctx: %v, want nil (shutting down is no error)", err)
	}
	if err := h.hb.Idle(ctx); err != nil {
		t.Errorf("Idle with an ended ctx: %v, want nil", err)
	}
	if got := h.writes(); got != before {
		t.Errorf("writes after the ctx ended: %d, want none", got-before)
	}
}

func TestFromEnv(t *testing.T) {
	complete := map[string]string{
		heartbeatapi.EnvNamespace: namespace, heartbeatapi.EnvFleet: fleet, heartbeatapi.EnvPodName: pod, heartbeatapi.EnvHeartbeatInterval: "7",
	}
	with := func(name, value string) map[string]string {
		env := map[string]string{}
		for k, v := range complete {
			env[k] = v
		}
		env[name] = value
		return env
	}
	cases := map[string]struct {
		env     map[string]string
		wantErr string
	}{
		"complete":                              {env: complete},
		"no pod name":                           {env: with(heartbeatapi.EnvPodName, ""), wantErr: "not set: [" + heartbeatapi.EnvPodName + "]"},
		"no interval":                           {env: with(heartbeatapi.EnvHeartbeatInterval, ""), wantErr: "not set: [" + heartbeatapi.EnvHeartbeatInterval + "]"},
		"interval not a number":                 {env: with(heartbeatapi.EnvHeartbeatInterval, "10s"), wantErr: heartbeatapi.EnvHeartbeatInterval + `="10s" is not a number of seconds`},
		"interval zero":                         {env: with(heartbeatapi.EnvHeartbeatInterval, "0"), wantErr: "is not a number of seconds"},
		"a budget":                              {env: with(heartbeatapi.EnvMaxTaskCost, "0.50")},
		"an empty budget is no limit, no error": {env: with(heartbeatapi.EnvMaxTokensPerTask, "")},
		"steps not a number": {
			env: with(heartbeatapi.EnvMaxStepsPerTask, "lots"), wantErr: heartbeatapi.EnvMaxStepsPerTask + `="lots": not a whole number`,
		},
		"negative tokens":    {env: with(heartbeatapi.EnvMaxTokensPerTask, "-5"), wantErr: heartbeatapi.EnvMaxTokensPerTask + `="-5": not a whole number`},
		"fractional seconds": {env: with(heartbeatapi.EnvMaxTaskSeconds, "1.5"), wantErr: heartbeatapi.EnvMaxTaskSeconds + `="1.5": not a whole number`},
		"too many seconds":   {env: with(heartbeatapi.EnvMaxTaskSeconds, "9223372036854775807"), wantErr: heartbeatapi.EnvMaxTaskSeconds + `="9223372036854775807": too many seconds`},
		"cost not a decimal": {env: with(heartbeatapi.EnvMaxTaskCost, "$1"), wantErr: heartbeatapi.EnvMaxTaskCost + `="$1": not a decimal cost`},
		"cost in two parts":  {env: with(heartbeatapi.EnvMaxTaskCost, "0.5.0"), wantErr: heartbeatapi.EnvMaxTaskCost + `="0.5.0": not a decimal cost`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cs := fake.NewClientset()
			hb, err := heartbeat.FromEnv(cs)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := hb.WithClock(clocktesting.NewFakeClock(t0)).Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			l, err := cs.CoordinationV1().Leases(namespace).Get(t.Context(), pod, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the Lease %s/%s: %v", namespace, pod, err)
			}
			if l.Labels[heartbeatapi.LabelFleet] != fleet || ptr.Deref(l.Spec.LeaseDurationSeconds, 0) != 7 {
				t.Errorf("Lease labels %v, duration %v; want fleet %s, 7 s", l.Labels, ptr.Deref(l.Spec.LeaseDurationSeconds, 0), fleet)
			}
		})
	}
}

func ptrs(kv ...string) map[string]*string {
	m := map[string]*string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = ptr.To(kv[i+1])
	}
	return m
}

// The operator's directives, and any other annotation the client does not own, stay on the Lease
// through the client's writes; its own annotations it no longer reports go.
func TestOperatorAnnotationsSurviveTheWrites(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	if err := h.hb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	foreign := map[string]string{
		heartbeatapi.AnnotationPaused:           "true",
		heartbeatapi.AnnotationMaxTokensPerTask: "200000",
		heartbeatapi.AnnotationMaxTaskCost:      "",
		"example.com/owner":                     "team-a",
	}
	h.operator(ptrs(
		heartbeatapi.AnnotationPaused, "true", heartbeatapi.AnnotationMaxTokensPerTask, "200000",
		heartbeatapi.AnnotationMaxTaskCost, "", "example.com/owner", "team-a"))
	plus := func(own map[string]string) map[string]string {
		for k, v := range foreign {
			own[k] = v
		}
		return own
	}
	checks := []struct {
		name string
		op   op
		want map[string]string
	}{
		{"a step from idle", step("a"), plus(started(annotations(heartbeatapi.StateWorking, 1, 1, 1, at(0)), at(0)))},
		{"tokens and a renewal", func(ctx context.Context, h *harness) error {
			if err := h.hb.Tokens(ctx, 10, 5); err != nil {
				return err
			}
			h.renewal(interval)
			return nil
		}, plus(started(with(annotations(heartbeatapi.StateWorking, 1, 1, 1, at(0)),
			heartbeatapi.AnnotationTokensIn, "10", heartbeatapi.AnnotationTokensOut, "5", heartbeatapi.AnnotationTaskTokens, "15"), at(0)))},
		{"the task's end removes its start", done(true), plus(with(annotations(heartbeatapi.StateIdle, 1, 0, 0, at(0)),
			heartbeatapi.AnnotationTasksSucceeded, "1", heartbeatapi.AnnotationTasksFailed, "0",
			heartbeatapi.AnnotationTokensIn, "10", heartbeatapi.AnnotationTokensOut, "5", heartbeatapi.AnnotationTaskTokens, "0"))},
	}
	for _, c := range checks {
		if err := c.op(ctx, h); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if diff := cmp.Diff(c.want, h.stored().Annotations); diff != "" {
			t.Errorf("after %s: the Lease's annotations (-want +got):\n%s", c.name, diff)
		}
	}
	if diff := cmp.Diff(map[string]string{heartbeatapi.LabelFleet: fleet}, h.stored().Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
}

// A write that conflicts with the operator's (it patched the Lease since the client last read it)
// reads the Lease again and lands at once, not at the next interval.
func TestAConflictIsRetriedAtOnce(t *testing.T) {
	cases := map[string]struct {
		// write makes the client write, and returns the Lease it wrote, or nil for the stored one.
		write       func(h *harness) (*coordinationv1.Lease, error)
		wantRenewal time.Time
	}{
		"a step from idle": {
			write: func(h *harness) (*coordinationv1.Lease, error) {
				h.clock.Step(time.Second)
				return nil, h.hb.Step(h.t.Context(), "a")
			},
			wantRenewal: t0.Add(time.Second),
		},
		// Without the retry at once, this renewal would come an interval late, and h.renewal fail.
		"a renewal": {
			write:       func(h *harness) (*coordinationv1.Lease, error) { return h.renewal(interval), nil },
			wantRenewal: t0.Add(interval),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			if err := h.hb.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			h.operator(ptrs(heartbeatapi.AnnotationPaused, "true"))
			gets, updates, writes := h.count("get"), h.count("update"), h.hb.Writes()
			l, err := tc.write(h)
			if err != nil {
				t.Fatalf("the write: %v, want it retried and landed", err)
			}
			if got, want := [2]int{h.count("get") - gets, h.count("update") - updates}, [2]int{1, 2}; got != want {
				t.Errorf("(gets, updates) = %v, want %v: a conflict, a read, the write again", got, want)
			}
			if got := h.hb.Writes() - writes; got != 2 {
				t.Errorf("Writes() counted %d, want 2: the retry is a write", got)
			}
			if l == nil {
				l = h.stored()
			}
			if !l.Spec.RenewTime.Time.Equal(tc.wantRenewal) {
				t.Errorf("renewTime = %s, want %s", l.Spec.RenewTime.Time, tc.wantRenewal)
			}
			if got := l.Annotations[heartbeatapi.AnnotationPaused]; got != "true" {
				t.Errorf("the operator's %s = %q after the retry, want it kept", heartbeatapi.AnnotationPaused, got)
			}
			if !h.hb.Paused() {
				t.Error("Paused() = false after the retry read the Lease, want true")
			}
		})
	}
}

// The retry is one: a write that conflicts again fails (a renewal is tried at the next interval),
// and the next write reads the Lease afresh.
func TestAConflictIsRetriedOnce(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	if err := h.hb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	conflicts := true
	h.cs.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts {
			return true, nil, apierrors.NewConflict(leasesResource.GroupResource(), pod, errors.New("the object has been modified"))
		}
		return false, nil, nil
	})
	updates := h.count("update")
	err := h.hb.Step(ctx, "a")
	if !apierrors.IsConflict(err) {
		t.Fatalf("Step with conflicts on every update: %v, want a conflict", err)
	}
	if got := h.count("update") - updates; got != 2 {
		t.Errorf("updates = %d, want 2 (the write and one retry)", got)
	}
	conflicts = false
	if err := h.hb.TaskDone(ctx, true); err != nil {
		t.Fatalf("the next write: %v", err)
	}
	if diff := cmp.Diff(with(annotations(heartbeatapi.StateIdle, 1, 0, 0, at(0)),
		heartbeatapi.AnnotationTasksSucceeded, "1", heartbeatapi.AnnotationTasksFailed, "0"), h.stored().Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
}

// Paused follows the operator's annotation on the Lease as of the client's last write.
func TestPausedFollowsTheLease(t *testing.T) {
	h := newHarness(t)
	if err := h.hb.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name  string
		patch map[string]*string
		renew bool
		want  bool
	}{
		{name: "before any directive"},
		{name: "paused, before the next write", patch: ptrs(heartbeatapi.AnnotationPaused, "true")},
		{name: "paused, after the next renewal", renew: true, want: true},
		{name: "unpaused (the annotation removed)", patch: map[string]*string{heartbeatapi.AnnotationPaused: nil}, renew: true},
		{name: "paused again", patch: ptrs(heartbeatapi.AnnotationPaused, "true"), renew: true, want: true},
		{name: "anything but true is not paused", patch: ptrs(heartbeatapi.AnnotationPaused, "false"), renew: true},
	}
	for _, s := range steps {
		if s.patch != nil {
			h.operator(s.patch)
		}
		if s.renew {
			h.renewal(interval)
		}
		if got := h.hb.Paused(); got != s.want {
			t.Errorf("%s: Paused() = %t, want %t", s.name, got, s.want)
		}
	}
}

// Budget is the environment's budget, as the operator's annotations on the Lease change it.
func TestBudget(t *testing.T) {
	env := map[string]string{
		heartbeatapi.EnvMaxStepsPerTask: "500", heartbeatapi.EnvMaxTokensPerTask: "100000",
		heartbeatapi.EnvMaxTaskSeconds: "600", heartbeatapi.EnvMaxTaskCost: "0.50",
	}
	fromEnv := heartbeat.Budget{MaxSteps: 500, MaxTokens: 100000, MaxDuration: 10 * time.Minute, MaxCost: "0.50"}
	cases := map[string]struct {
		env         map[string]string
		annotations map[string]*string
		want        heartbeat.Budget
	}{
		"none: no limits":                            {want: heartbeat.Budget{}},
		"empty variables: no limits":                 {env: map[string]string{heartbeatapi.EnvMaxTokensPerTask: "", heartbeatapi.EnvMaxTaskCost: ""}, want: heartbeat.Budget{}},
		"the environment's":                          {env: env, want: fromEnv},
		"only the steps (always given)":              {env: map[string]string{heartbeatapi.EnvMaxStepsPerTask: "500"}, want: heartbeat.Budget{MaxSteps: 500}},
		"the environment's, other annotations aside": {env: env, annotations: ptrs(heartbeatapi.AnnotationPaused, "true"), want: fromEnv},
		"annotations override the environment": {
			env:         env,
			annotations: ptrs(heartbeatapi.AnnotationMaxTokensPerTask, "200000", heartbeatapi.AnnotationMaxTaskSeconds, "1200"),
			want:        heartbeat.Budget{MaxSteps: 500, MaxTokens: 200000, MaxDuration: 20 * time.Minute, MaxCost: "0.50"},
		},
		"an empty annotation is no limit": {
			env:         env,
			annotations: ptrs(heartbeatapi.AnnotationMaxStepsPerTask, "", heartbeatapi.AnnotationMaxTaskCost, ""),
			want:        heartbeat.Budget{MaxTokens: 100000, MaxDuration: 10 * time.Minute},
		},
		"an annotation sets a limit the environment has none of": {
			annotations: ptrs(heartbeatapi.AnnotationMaxTaskCost, "1.25", heartbeatapi.AnnotationMaxStepsPerTask, "40"),
			want:        heartbeat.Budget{MaxSteps: 40, MaxCost: "1.25"},
		},
		"a malformed annotation is ignored: the environment's value stands": {
			env:         env,
			annotations: ptrs(heartbeatapi.AnnotationMaxTokensPerTask, "lots", heartbeatapi.AnnotationMaxTaskCost, "-1"),
			want:        fromEnv,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			base := map[string]string{
				heartbeatapi.EnvNamespace: namespace, heartbeatapi.EnvFleet: fleet, heartbeatapi.EnvPodName: pod,
				heartbeatapi.EnvHeartbeatInterval: strconv.Itoa(int(interval.Seconds())),
			}
			for k, v := range base {
				t.Setenv(k, v)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			h := newHarness(t)
			hb, err := heartbeat.FromEnv(h.cs)
			if err != nil {
				t.Fatal(err)
			}
			h.hb = hb.WithClock(h.clock)
			envOnly := h.hb.Budget()
			if err := h.hb.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			if tc.annotations != nil {
				h.operator(tc.annotations)
				h.renewal(interval)
			}
			if diff := cmp.Diff(tc.want, h.hb.Budget()); diff != "" {
				t.Errorf("Budget() (-want +got):\n%s", diff)
			}
			if tc.annotations == nil {
				return
			}
			// The annotations removed, the environment's budget stands again.
			removed := map[string]*string{}
			for k := range tc.annotations {
				removed[k] = nil
			}
			h.operator(removed)
			h.renewal(interval)
			if diff := cmp.Diff(envOnly, h.hb.Budget()); diff != "" {
				t.Errorf("Budget() with the annotations removed (-want: the environment's +got):\n%s", diff)
			}
		})
	}
}
