package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// statusNow is the fixed clock of these tests; fleets are created relative to it.
var statusNow = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

const (
	hashCoders = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hashEval   = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
	h100       = "NVIDIA-H100-80GB-HBM3"
)

// fleetBuilder makes AgentFleets for these tests: statusFleet("coders", "team-a").GPUs(...).Obj().
type fleetBuilder struct{ f v1alpha1.AgentFleet }

func statusFleet(name, namespace string) *fleetBuilder {
	return &fleetBuilder{f: v1alpha1.AgentFleet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, CreationTimestamp: metav1.NewTime(statusNow.Add(-time.Hour))},
		Spec: v1alpha1.AgentFleetSpec{
			Image:      "ghcr.io/agentfleet/coder:1.0",
			RayVersion: "2.52.0",
			Model:      v1alpha1.ModelSpec{Name: "claude-sonnet-4-5", Version: "2025-09-29"},
		},
	}}
}

func (b *fleetBuilder) Age(d time.Duration) *fleetBuilder {
	b.f.CreationTimestamp = metav1.NewTime(statusNow.Add(-d))
	return b
}

func (b *fleetBuilder) Replicas(n int32) *fleetBuilder { b.f.Spec.Replicas = ptr.To(n); return b }

func (b *fleetBuilder) Model(name, version string) *fleetBuilder {
	b.f.Spec.Model = v1alpha1.ModelSpec{Name: name, Version: version}
	return b
}

// Observed sets what the operator reports: phase, ready and updated workers, prompt hash, the model
// version the workers run and the dashboard.
func (b *fleetBuilder) Observed(phase v1alpha1.Phase, ready, updated int32, promptHash, dashboard string) *fleetBuilder {
	b.f.Status.Phase = phase
	b.f.Status.ReadyReplicas = ready
	b.f.Status.UpdatedReplicas = updated
	b.f.Status.PromptHash = promptHash
	b.f.Status.DashboardURL = dashboard
	b.f.Status.ModelVersion = b.f.Spec.Model.Version
	return b
}

func (b *fleetBuilder) GPUs(requested, allocated int32, product string) *fleetBuilder {
	b.f.Status.GPUs = v1alpha1.GPUStatus{Requested: requested, Allocated: allocated, Product: product}
	return b
}

func (b *fleetBuilder) Restarts(r v1alpha1.RestartCounts) *fleetBuilder {
	b.f.Status.Restarts = r
	return b
}

func (b *fleetBuilder) Condition(typ string, status metav1.ConditionStatus, reason, message string) *fleetBuilder {
	b.f.Status.Conditions = append(b.f.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message,
		LastTransitionTime: metav1.NewTime(statusNow.Add(-time.Minute)),
	})
	return b
}

func (b *fleetBuilder) Obj() *v1alpha1.AgentFleet { f := b.f.DeepCopy(); return f }

// The fleets of these tests, across two namespaces and given to the fake client out of order.
func statusFleets() []client.Object {
	return []client.Object{
		// Running, GPUs, no restarts.
		statusFleet("coders", "team-a").Age(49*time.Hour).Replicas(4).
			Observed(v1alpha1.PhaseRunning, 4, 4, hashCoders, "http://coders-head-svc.team-a.svc:8265").
			GPUs(8, 8, h100).
			Condition(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "4/4 workers ready").
			Condition(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "").
			Obj(),
		// Degraded by the restart budget, restarts of several reasons, a GPU worker lost.
		statusFleet("eval", "team-b").Age(3*time.Hour+20*time.Minute).Replicas(3).Model("llama-3.1-70b-instruct", "v7").
			Observed(v1alpha1.PhaseDegraded, 1, 3, hashEval, "http://eval-head-svc.team-b.svc:8265").
			GPUs(6, 2, h100).
			Restarts(v1alpha1.RestartCounts{Crashed: 7, Stalled: 2, GPUUnhealthy: 1}).
			Condition(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonScaling, "1/3 workers ready").
			Condition(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonRestartBudgetExhausted, "10 restarts in 3600s").
			Obj(),
		// Just created: the operator has written no status yet.
		statusFleet("fresh", "team-a").Age(5 * time.Second).Obj(),
		// Rolling, no GPUs, a looping restart.
		statusFleet("agents", "team-a").Age(10*time.Minute).Replicas(2).
			Observed(v1alpha1.PhaseProgressing, 2, 1, hashEval, "").
			Restarts(v1alpha1.RestartCounts{Looping: 1}).
			Condition(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonRolling, "1/2 workers updated").
			Obj(),
	}
}

func newStatusClient(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) client.Reader {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

func TestStatusTable(t *testing.T) {
	tests := map[string]struct {
		opts StatusOptions
		objs []client.Object
		want string
	}{
		"all namespaces, sorted by namespace then name": {
			opts: StatusOptions{AllNamespaces: true},
			objs: statusFleets(),
			want: `NAMESPACE   NAME     PHASE         WORKERS   UPDATED   RESTARTS                                    GPUS                        PROMPT         AGE
team-a      agents   Progressing   2/2       1         1 (looping 1)                               -                           60303ae22b99   10m
team-a      coders   Running       4/4       4         0                                           8/8 NVIDIA-H100-80GB-HBM3   9f86d081884c   2d1h
team-a      fresh    Pending       0/1       0         0                                           -                           -              5s
team-b      eval     Degraded      1/3       3         10 (crashed 7, stalled 2, gpuUnhealthy 1)   2/6 NVIDIA-H100-80GB-HBM3   60303ae22b99   3h20m
`,
		},
		"one namespace only": {
			opts: StatusOptions{Namespace: "team-b"},
			objs: statusFleets(),
			want: `NAME   PHASE      WORKERS   UPDATED   RESTARTS                                    GPUS                        PROMPT         AGE
eval   Degraded   1/3       3         10 (crashed 7, stalled 2, gpuUnhealthy 1)   2/6 NVIDIA-H100-80GB-HBM3   60303ae22b99   3h20m
`,
		},
		"one fleet": {
			opts: StatusOptions{Namespace: "team-a", Name: "coders"},
			objs: statusFleets(),
			want: `NAME     PHASE     WORKERS   UPDATED   RESTARTS   GPUS                        PROMPT         AGE
coders   Running   4/4       4         0          8/8 NVIDIA-H100-80GB-HBM3   9f86d081884c   2d1h
`,
		},
		// A fleet the operator has not reconciled (just created, or no operator running) shows
		// Pending, its declared workers, and dashes for what only the operator can know.
		"fresh fleet without status": {
			opts: StatusOptions{Namespace: "team-a", Name: "fresh", Output: "wide"},
			objs: statusFleets(),
			want: `NAME    PHASE     WORKERS   UPDATED   RESTARTS   GPUS   PROMPT   AGE   MODEL                          DASHBOARD   REASON
fresh   Pending   0/1       0         0          -      -        5s    claude-sonnet-4-5:2025-09-29   -           -
`,
		},
		// REASON is Degraded's reason when it is True (eval), else Ready's (coders, agents).
		"wide": {
			opts: StatusOptions{AllNamespaces: true, Output: "wide"},
			objs: statusFleets()[:2],
			want: `NAMESPACE   NAME     PHASE      WORKERS   UPDATED   RESTARTS                                    GPUS                        PROMPT         AGE     MODEL                          DASHBOARD                                REASON
team-a      coders   Running    4/4       4         0                                           8/8 NVIDIA-H100-80GB-HBM3   9f86d081884c   2d1h    claude-sonnet-4-5:2025-09-29   http://coders-head-svc.team-a.svc:8265   Ready
team-b      eval     Degraded   1/3       3         10 (crashed 7, stalled 2, gpuUnhealthy 1)   2/6 NVIDIA-H100-80GB-HBM3   60303ae22b99   3h20m   llama-3.1-70b-instruct:v7      http://eval-head-svc.team-b.svc:8265     RestartBudgetExhausted
`,
		},
		"empty namespace": {
			opts: StatusOptions{Namespace: "team-c"},
			objs: statusFleets(),
			want: "No agent fleets found in namespace team-c.\n",
		},
		"no fleets in any namespace": {
			opts: StatusOptions{AllNamespaces: true, Output: "wide"},
			want: "No agent fleets found.\n",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if err := status(context.Background(), newStatusClient(t, nil, tc.objs...), tc.opts, &out, statusNow); err != nil {
				t.Fatalf("status: %v", err)
			}
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStatusRestartsCell(t *testing.T) {
	tests := map[string]struct {
		in   v1alpha1.RestartCounts
		want string
	}{
		"none":        {want: "0"},
		"one reason":  {in: v1alpha1.RestartCounts{Stalled: 3}, want: "3 (stalled 3)"},
		"gpu only":    {in: v1alpha1.RestartCounts{GPUUnhealthy: 2}, want: "2 (gpuUnhealthy 2)"},
		"two reasons": {in: v1alpha1.RestartCounts{Crashed: 2, Stalled: 1}, want: "3 (crashed 2, stalled 1)"},
		"every reason, in a fixed order": {
			in:   v1alpha1.RestartCounts{GPUUnhealthy: 4, Looping: 3, Stalled: 2, Crashed: 1},
			want: "10 (crashed 1, stalled 2, looping 3, gpuUnhealthy 4)",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, restartsCell(tc.in)); diff != "" {
				t.Errorf("restarts (-want +got):\n%s", diff)
			}
		})
	}
}

// The summary objects of the statusFleets, as -o json|yaml must print them.
var (
	codersSummary = FleetSummary{
		Namespace: "team-a", Name: "coders", Phase: "Running",
		Workers:      WorkersSummary{Desired: 4, Ready: 4, Updated: 4},
		GPUs:         GPUsSummary{Requested: 8, Allocated: 8, Product: h100},
		PromptHash:   hashCoders,
		ModelVersion: "2025-09-29",
		DashboardURL: "http://coders-head-svc.team-a.svc:8265",
		Conditions: []ConditionSummary{
			{Type: "Ready", Status: "True", Reason: "Ready", Message: "4/4 workers ready"},
			{Type: "Degraded", Status: "False", Reason: "AsExpected"},
		},
	}
	evalSummary = FleetSummary{
		Namespace: "team-b", Name: "eval", Phase: "Degraded",
		Workers:      WorkersSummary{Desired: 3, Ready: 1, Updated: 3},
		Restarts:     RestartsSummary{Crashed: 7, Stalled: 2, GPUUnhealthy: 1, Total: 10},
		GPUs:         GPUsSummary{Requested: 6, Allocated: 2, Product: h100},
		PromptHash:   hashEval,
		ModelVersion: "v7",
		DashboardURL: "http://eval-head-svc.team-b.svc:8265",
		Conditions: []ConditionSummary{
			{Type: "Ready", Status: "False", Reason: "Scaling", Message: "1/3 workers ready"},
			{Type: "Degraded", Status: "True", Reason: "RestartBudgetExhausted", Message: "10 restarts in 3600s"},
		},
	}
	agentsSummary = FleetSummary{
		Namespace: "team-a", Name: "agents", Phase: "Progressing",
		Workers:      WorkersSummary{Desired: 2, Ready: 2, Updated: 1},
		Restarts:     RestartsSummary{Looping: 1, Total: 1},
		PromptHash:   hashEval,
		ModelVersion: "2025-09-29",
		Conditions:   []ConditionSummary{{Type: "Ready", Status: "False", Reason: "Rolling", Message: "1/2 workers updated"}},
	}
	freshSummary = FleetSummary{
		Namespace: "team-a", Name: "fresh", Phase: "Pending",
		Workers:    WorkersSummary{Desired: 1},
		Conditions: []ConditionSummary{},
	}
)

func TestStatusStructured(t *testing.T) {
	tests := map[string]struct {
		opts StatusOptions
		objs []client.Object
		// decode turns the output into what is compared with want.
		decode func([]byte, any) error
		got    func() any
		want   any
	}{
		"json list across namespaces": {
			opts:   StatusOptions{AllNamespaces: true, Output: "json"},
			objs:   statusFleets(),
			decode: json.Unmarshal,
			got:    func() any { return &FleetSummaryList{} },
			want:   &FleetSummaryList{Items: []FleetSummary{agentsSummary, codersSummary, freshSummary, evalSummary}},
		},
		"json list of a namespace": {
			opts:   StatusOptions{Namespace: "team-b", Output: "json"},
			objs:   statusFleets(),
			decode: json.Unmarshal,
			got:    func() any { return &FleetSummaryList{} },
			want:   &FleetSummaryList{Items: []FleetSummary{evalSummary}},
		},
		"json of one fleet is the object alone": {
			opts:   StatusOptions{Namespace: "team-b", Name: "eval", Output: "json"},
			objs:   statusFleets(),
			decode: json.Unmarshal,
			got:    func() any { return &FleetSummary{} },
			want:   &evalSummary,
		},
		"json of an empty namespace is an empty list, not a message": {
			opts:   StatusOptions{Namespace: "team-c", Output: "json"},
			objs:   statusFleets(),
			decode: json.Unmarshal,
			got:    func() any { return &FleetSummaryList{} },
			want:   &FleetSummaryList{Items: []FleetSummary{}},
		},
		"yaml of a fresh fleet": {
			opts:   StatusOptions{Namespace: "team-a", Name: "fresh", Output: "yaml"},
			objs:   statusFleets(),
			decode: func(b []byte, v any) error { return yaml.UnmarshalStrict(b, v) },
			got:    func() any { return &FleetSummary{} },
			want:   &freshSummary,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if err := status(context.Background(), newStatusClient(t, nil, tc.objs...), tc.opts, &out, statusNow); err != nil {
				t.Fatalf("status: %v", err)
			}
			got := tc.got()
			if err := tc.decode(out.Bytes(), got); err != nil {
				t.Fatalf("decoding %q: %v", out.String(), err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStatusJSONFieldNames pins the field names scripts read: decoding into FleetSummary would
// accept any renaming of its tags.
func TestStatusJSONFieldNames(t *testing.T) {
	var out bytes.Buffer
	opts := StatusOptions{Namespace: "team-a", Name: "agents", Output: "json"}
	if err := status(context.Background(), newStatusClient(t, nil, statusFleets()...), opts, &out, statusNow); err != nil {
		t.Fatalf("status: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("decoding %q: %v", out.String(), err)
	}
	want := map[string]any{
		"namespace":    "team-a",
		"name":         "agents",
		"phase":        "Progressing",
		"workers":      map[string]any{"desired": 2.0, "ready": 2.0, "updated": 1.0},
		"restarts":     map[string]any{"crashed": 0.0, "stalled": 0.0, "looping": 1.0, "gpuUnhealthy": 0.0, "total": 1.0},
		"gpus":         map[string]any{"requested": 0.0, "allocated": 0.0, "product": ""},
		"promptHash":   hashEval,
		"modelVersion": "2025-09-29",
		"dashboardURL": "",
		"conditions": []any{
			map[string]any{"type": "Ready", "status": "False", "reason": "Rolling", "message": "1/2 workers updated"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("json (-want +got):\n%s", diff)
	}
}

func TestStatusErrors(t *testing.T) {
	noCRD := &interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "AgentFleet"}, SearchedVersions: []string{"v1alpha1"}}
		},
	}
	forbidden := &interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return apierrors.NewForbidden(schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "agentfleets"}, "coders", errors.New("RBAC: access denied"))
		},
	}
	tests := map[string]struct {
		opts    StatusOptions
		funcs   *interceptor.Funcs
		wantErr string
		// is, when set, must hold for the error: the API error stays inspectable through the wrap.
		is func(error) bool
	}{
		"missing fleet": {
			opts:    StatusOptions{Namespace: "team-b", Name: "coders"},
			wantErr: `agentfleet "coders" not found in namespace "team-b"`,
		},
		"unknown output": {
			opts:    StatusOptions{Namespace: "team-a", Output: "xml"},
			wantErr: `unknown output format "xml": accepted are wide, json and yaml, or none for the table`,
		},
		"a name across all namespaces": {
			opts:    StatusOptions{AllNamespaces: true, Name: "coders"},
			wantErr: `agentfleet "coders": a fleet cannot be named across all namespaces: drop --all-namespaces or give --namespace`,
		},
		"CRD not installed": {
			opts:    StatusOptions{AllNamespaces: true},
			funcs:   noCRD,
			wantErr: `listing agentfleets in all namespaces: is the AgentFleet CRD installed in this cluster? no matches for kind "AgentFleet" in version "agentfleet.dev/v1alpha1"`,
			is:      meta.IsNoMatchError,
		},
		"forbidden": {
			opts:    StatusOptions{Namespace: "team-a", Name: "coders"},
			funcs:   forbidden,
			wantErr: `getting agentfleet team-a/coders: agentfleets.agentfleet.dev "coders" is forbidden: RBAC: access denied`,
			is:      apierrors.IsForbidden,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			err := status(context.Background(), newStatusClient(t, tc.funcs, statusFleets()...), tc.opts, &out, statusNow)
			if err == nil {
				t.Fatalf("status: no error, printed %q; want %q", out.String(), tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantErr, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if tc.is != nil && !tc.is(err) {
				t.Errorf("error %v lost its API type in the wrap", err)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q along with an error", out.String())
			}
		})
	}
}

// TestStatusUsesTheClock: AGE is computed from the clock passed in, not the wall clock.
func TestStatusUsesTheClock(t *testing.T) {
	c := newStatusClient(t, nil, statusFleet("coders", "team-a").Age(90*time.Second).Obj())
	ages := map[time.Duration]string{0: "90s", 10 * time.Minute: "11m", 72 * time.Hour: "3d"}
	for later, want := range ages {
		var out bytes.Buffer
		if err := status(context.Background(), c, StatusOptions{Namespace: "team-a", Name: "coders"}, &out, statusNow.Add(later)); err != nil {
			t.Fatalf("status: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		fields := strings.Fields(lines[len(lines)-1])
		if got := fields[len(fields)-1]; got != want {
			t.Errorf("%v later: AGE %q, want %q (output %q)", later, got, want, out.String())
		}
	}
}
