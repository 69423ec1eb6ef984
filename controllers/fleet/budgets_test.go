package fleet_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/supervisor"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// report writes a worker's heartbeat Lease with the given annotations, renewed now, and gives the
// event to the usage ledger as the leader's informer would: a create, or an update from the Lease
// as it was.
func (e *env) report(fleet, worker string, annotations map[string]string) *coordinationv1.Lease {
	e.t.Helper()
	now := metav1.NewMicroTime(e.clock.Now())
	l := &coordinationv1.Lease{}
	err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: worker}, l)
	var old *coordinationv1.Lease
	if err == nil {
		old = l.DeepCopy()
		for k, v := range annotations {
			l.Annotations[k] = v
		}
		l.Spec.RenewTime = &now
		if err := k8s.Update(e.ctx, l); err != nil {
			e.t.Fatal(err)
		}
	} else {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: worker, Namespace: e.ns, Labels: map[string]string{v1alpha1.LabelFleet: fleet}, Annotations: annotations},
			Spec:       coordinationv1.LeaseSpec{RenewTime: &now},
		}
		e.apply(l)
	}
	e.r.AccountLease(e.ctx, old, l, false)
	return l
}

// leaseVersion is a worker's Lease's resourceVersion.
func (e *env) leaseVersion(worker string) string {
	e.t.Helper()
	l := &coordinationv1.Lease{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: worker}, l); err != nil {
		e.t.Fatal(err)
	}
	return l.ResourceVersion
}

// leaseAnnotations reads a worker's Lease's annotations.
func (e *env) leaseAnnotations(worker string) map[string]string {
	e.t.Helper()
	l := &coordinationv1.Lease{}
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: worker}, l); err != nil {
		e.t.Fatal(err)
	}
	return l.Annotations
}

func tokens(in, out int) map[string]string {
	return map[string]string{
		heartbeatapi.AnnotationState: heartbeatapi.StateIdle, heartbeatapi.AnnotationSteps: "1",
		heartbeatapi.AnnotationTokensIn: strconv.Itoa(in), heartbeatapi.AnnotationTokensOut: strconv.Itoa(out),
		heartbeatapi.AnnotationTaskTokens: "0",
	}
}

// A fleet over maxTokensPerHour with onExceeded: Pause is Degraded, its workers are told to pause on
// their Leases, no job run starts; it resumes when the hour rolls under the budget, and when the
// budget is raised. Only the Leases whose directives change are written.
func TestFleetBudgetPausesAndResumes(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).Heartbeat(10, 600, 20, 500).Model("claude-sonnet-4-5", "v1").Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxTokensPerHour: ptr.To[int64](1000), OnExceeded: v1alpha1.BudgetPause}
	}).Obj())
	e.clockFrom("agents")
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	e.headReady(rc)
	workers := e.workers(rc, 2, rayspecs.WorkerHash(rc), true)
	e.report("agents", workers[0], tokens(500, 100))
	e.report("agents", workers[1], tokens(300, 100))
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionBudgetExceeded, metav1.ConditionFalse, v1alpha1.ReasonWithinBudget, "within")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "")
	for _, w := range workers {
		if a := e.leaseAnnotations(w); a[heartbeatapi.AnnotationPaused] != "" || a[heartbeatapi.AnnotationMaxStepsPerTask] != "" {
			t.Errorf("Lease %s got directives while nothing differs from its environment: %v", w, a)
		}
	}

	// 1,000 tokens in the hour is the budget, spent to the last token; one more is over it.
	e.clock.Step(time.Minute)
	e.report("agents", workers[1], tokens(301, 100))
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionBudgetExceeded, metav1.ConditionTrue, v1alpha1.ReasonBudgetExceeded, "the last hour's tokens passed maxTokensPerHour (1000)")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonBudgetExceeded, "paused")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonBudgetExceeded, "")
	if ev := e.event(v1alpha1.ReasonBudgetExceeded); !strings.Contains(ev, "1001 tokens in the last hour (maxTokensPerHour 1000)") {
		t.Errorf("event %q lacks the figures", ev)
	}
	versions := map[string]string{}
	for _, w := range workers {
		if got := e.leaseAnnotations(w)[heartbeatapi.AnnotationPaused]; got != "true" {
			t.Errorf("Lease %s: %s = %q, want true", w, heartbeatapi.AnnotationPaused, got)
		}
		versions[w] = e.leaseVersion(w)
	}
	// More tokens while paused, within the minute: neither the status nor a Lease is written again
	// (the condition says which budget, not the figures, which status.usage has once a minute).
	statusVersion := e.get("agents").ResourceVersion
	e.clock.Step(10 * time.Second)
	e.report("agents", workers[1], tokens(350, 100))
	versions[workers[1]] = e.leaseVersion(workers[1]) // the agent's own write
	e.reconcile("agents")
	if got := e.get("agents").ResourceVersion; got != statusVersion {
		t.Errorf("the fleet was written again while nothing but the figures moved (resourceVersion %s -> %s)", statusVersion, got)
	}
	for _, w := range workers {
		if got := e.leaseVersion(w); got != versions[w] {
			t.Errorf("Lease %s written again with nothing to change (resourceVersion %s -> %s)", w, versions[w], got)
		}
	}
	// A job declared while paused does not run.
	f := e.get("agents")
	f.Spec.Jobs = []v1alpha1.JobSpec{{Name: "eval", Entrypoint: "python eval.py"}}
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	if jobs := e.rayJobs(); len(jobs) != 0 {
		t.Errorf("RayJobs %v started while the fleet is paused", names(jobs))
	}
	if st := e.get("agents").Status.Jobs; len(st) != 1 || st[0].Message == "" {
		t.Errorf("job status %+v, want one saying why it does not run", st)
	}

	// The hour rolls: the first 900 tokens (reported at the start) leave the window. The workers
	// kept renewing (paused, idle).
	e.clock.Step(time.Hour)
	e.report("agents", workers[0], tokens(500, 100))
	e.report("agents", workers[1], tokens(350, 100))
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionBudgetExceeded, metav1.ConditionFalse, v1alpha1.ReasonWithinBudget, "")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	e.event(v1alpha1.ReasonWithinBudget)
	for _, w := range workers {
		if a := e.leaseAnnotations(w); a[heartbeatapi.AnnotationPaused] != "" {
			t.Errorf("Lease %s still paused: %v", w, a)
		}
	}
	if jobs := e.rayJobs(); len(jobs) != 1 {
		t.Errorf("RayJobs %v after resuming, want the eval run", names(jobs))
	}

	// Over again; then the budget is raised in Git: resumed at once.
	e.report("agents", workers[0], tokens(1600, 100)) // 1,100 more, and the 49 of 10:01 still in the hour
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonBudgetExceeded, "passed maxTokensPerHour (1000)")
	f = e.get("agents")
	f.Spec.Budgets.MaxTokensPerHour = ptr.To[int64](5000)
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	if a := e.leaseAnnotations(workers[0]); a[heartbeatapi.AnnotationPaused] != "" {
		t.Errorf("Lease %s still paused after the budget was raised: %v", workers[0], a)
	}
}

// An Alert budget says so and stays Healthy; status.usage carries the windows' figures and the cost
// per succeeded task.
func TestFleetBudgetAlertAndUsageStatus(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(1).Heartbeat(10, 600, 20, 500).Model("claude-sonnet-4-5", "v1").Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxTokensPerHour: ptr.To[int64](100000)}
	}).Obj())
	now := e.clockFrom("agents")
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	e.headReady(rc)
	w := e.workers(rc, 1, rayspecs.WorkerHash(rc), true)[0]
	a := tokens(100000, 20000)
	a[heartbeatapi.AnnotationTasksSucceeded], a[heartbeatapi.AnnotationTasksFailed] = "3", "1"
	e.report("agents", w, a)
	res := e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionBudgetExceeded, metav1.ConditionTrue, v1alpha1.ReasonBudgetExceeded, "passed maxTokensPerHour (100000)")
	if ev := e.event(v1alpha1.ReasonBudgetExceeded); !strings.Contains(ev, "120000 tokens in the last hour") {
		t.Errorf("event %q lacks the figures", ev)
	}
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	if got := e.leaseAnnotations(w)[heartbeatapi.AnnotationPaused]; got != "" {
		t.Errorf("an Alert budget paused the worker: %q", got)
	}
	// claude-sonnet-4-5 at the default table's 3 and 15 per million: 0.30 + 0.30 = 0.60; 0.20 a task.
	wantWindow := v1alpha1.UsageWindow{TokensIn: 100000, TokensOut: 20000, TasksSucceeded: 3, TasksFailed: 1, GPUCost: "0.00", TokenCost: "0.60", CostPerSucceededTask: "0.20"}
	u := e.get("agents").Status.Usage
	if u == nil {
		t.Fatal("no status.usage")
	}
	if diff := cmp.Diff(wantWindow, u.LastHour); diff != "" {
		t.Errorf("usage of the last hour (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantWindow, u.LastDay); diff != "" {
		t.Errorf("usage of the last day (-want +got):\n%s", diff)
	}
	if u.Currency != "USD" || !u.UpdatedAt.Time.Equal(now.Truncate(time.Second)) {
		t.Errorf("usage currency %q at %v, want USD at %v", u.Currency, u.UpdatedAt, now)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > time.Minute {
		t.Errorf("requeueAfter %v: the usage is refreshed within a minute", res.RequeueAfter)
	}
}

// A per-task budget change reaches running workers on their Leases, not by a roll; a worker over its
// task's token budget is replaced as OverBudget.
func TestTaskBudget(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(2).Heartbeat(10, 600, 20, 500).Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxTokens: ptr.To[int64](5000)}
	}).Obj())
	e.clockFrom("agents")
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	e.headReady(rc)
	hash := rayspecs.WorkerHash(rc)
	workers := e.workers(rc, 2, hash, true)
	for _, w := range workers {
		e.report("agents", w, tokens(10, 10))
	}
	e.reconcile("agents")

	f := e.get("agents")
	f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxTokens: ptr.To[int64](4000), MaxSteps: ptr.To[int32](50)}
	if err := k8s.Update(e.ctx, f); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	if got := rayspecs.WorkerHash(e.rayCluster("agents")); got != hash {
		t.Errorf("a budget change moved the worker revision from %s to %s", hash, got)
	}
	want := map[string]string{
		heartbeatapi.AnnotationMaxStepsPerTask: "50", heartbeatapi.AnnotationMaxTokensPerTask: "4000",
		heartbeatapi.AnnotationMaxTaskSeconds: "", heartbeatapi.AnnotationMaxTaskCost: "",
	}
	for _, w := range workers {
		a := e.leaseAnnotations(w)
		got := map[string]string{}
		for k := range want {
			got[k] = a[k]
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Lease %s budget (-want +got):\n%s", w, diff)
		}
	}

	over := tokens(3000, 1500)
	over[heartbeatapi.AnnotationState], over[heartbeatapi.AnnotationTaskTokens] = heartbeatapi.StateWorking, "4001"
	over[heartbeatapi.AnnotationLastStepTime] = e.clock.Now().Format(heartbeatapi.TimeFormat)
	e.report("agents", workers[1], over)
	e.reconcile("agents")
	st := e.get("agents").Status
	if st.Restarts.OverBudget != 1 || len(st.RecentRestarts) != 1 || st.RecentRestarts[0].Reason != supervisor.OverBudget || st.RecentRestarts[0].Worker != workers[1] {
		t.Fatalf("restarts %+v %+v, want %s replaced as OverBudget", st.Restarts, st.RecentRestarts, workers[1])
	}
	if ev := e.event("WorkerReplaced"); !strings.Contains(ev, "4001 tokens in one task (limit 4000)") {
		t.Errorf("event %q lacks the evidence", ev)
	}
	if del := e.rayCluster("agents").Spec.WorkerGroupSpecs[0].ScaleStrategy.WorkersToDelete; len(del) != 1 || del[0] != workers[1] {
		t.Errorf("workersToDelete %v, want [%s]", del, workers[1])
	}
}
