package rayspecs_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/builder"
)

var eval = v1alpha1.JobSpec{Name: "eval", Entrypoint: "python eval.py", ActiveDeadlineSeconds: ptr.To(int32(600)), RuntimeEnvYAML: "pip: [evals==0.4.1]\n"}

func buildJob(t *testing.T, f *v1alpha1.AgentFleet, job string, o rayspecs.JobOptions) *rayv1.RayJob {
	t.Helper()
	rj, err := rayspecs.RayJob(f, job, o)
	if err != nil {
		t.Fatalf("RayJob: %v", err)
	}
	if err := rayutils.ValidateRayJobMetadata(rj.ObjectMeta); err != nil {
		t.Errorf("KubeRay refuses the metadata: %v", err)
	}
	if err := rayutils.ValidateRayJobSpec(rj); err != nil {
		t.Errorf("KubeRay refuses the spec: %v", err)
	}
	return rj
}

func TestRayJobTargetsTheFleetsCluster(t *testing.T) {
	rj := buildJob(t, fleet().Job(eval).Obj(), "eval", rayspecs.JobOptions{})
	want := rayv1.RayJobSpec{
		Entrypoint:            "python eval.py",
		RuntimeEnvYAML:        "pip: [evals==0.4.1]\n",
		ActiveDeadlineSeconds: ptr.To(int32(600)),
		ClusterSelector:       map[string]string{"ray.io/cluster": "research"},
		SubmissionMode:        rayv1.K8sJobMode,
	}
	if diff := cmp.Diff(want, rj.Spec); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	if rj.Labels[v1alpha1.LabelFleet] != "research" || rj.Labels[v1alpha1.LabelJob] != "eval" || rj.OwnerReferences[0].Name != "research" {
		t.Errorf("labels %v, owner %v", rj.Labels, rj.OwnerReferences)
	}
}

func TestRayJobNames(t *testing.T) {
	base := buildJob(t, fleet().Job(eval).Obj(), "eval", rayspecs.JobOptions{})
	if !strings.HasPrefix(base.Name, "research-eval-") || len(base.Name) != len("research-eval-")+8 {
		t.Errorf("name %q, want research-eval-<8 hex digits>", base.Name)
	}
	changed := eval
	changed.Entrypoint = "python eval.py --all"
	suspended, scheduled := eval, eval
	suspended.Suspend, scheduled.Schedule = true, "0 3 * * *"
	cases := map[string]struct {
		job        v1alpha1.JobSpec
		sameAsBase bool
	}{
		"same spec":                {eval, true},
		"changed entrypoint":       {changed, false},
		"suspend is not the spec":  {suspended, true},
		"schedule is not the spec": {scheduled, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rj := buildJob(t, fleet().Job(tc.job).Obj(), "eval", rayspecs.JobOptions{})
			if got := rj.Name == base.Name; got != tc.sameAsBase {
				t.Errorf("name %q vs %q: same = %v, want %v", rj.Name, base.Name, got, tc.sameAsBase)
			}
		})
	}

	run := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	a := buildJob(t, fleet().Job(scheduled).Obj(), "eval", rayspecs.JobOptions{ScheduledTime: run})
	b := buildJob(t, fleet().Job(scheduled).Obj(), "eval", rayspecs.JobOptions{ScheduledTime: run.Add(24 * time.Hour)})
	if a.Name == b.Name || !strings.HasPrefix(a.Name, base.Name+"-") {
		t.Errorf("runs %q and %q: want distinct names extending %q", a.Name, b.Name, base.Name)
	}
	if got := a.Annotations[v1alpha1.AnnotationScheduledTime]; got != "2026-11-23T03:00:00Z" {
		t.Errorf("scheduled-time annotation %q", got)
	}
}

func TestRayJobNameFitsKubeRaysLimit(t *testing.T) {
	long := builder.MakeAgentFleet(strings.Repeat("f", 53), "agents").
		Job(v1alpha1.JobSpec{Name: strings.Repeat("j", 29) + "x", Entrypoint: "x", Schedule: "@hourly"}).Obj()
	rj := buildJob(t, long, long.Spec.Jobs[0].Name, rayspecs.JobOptions{ScheduledTime: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)})
	if len(rj.Name) > 47 {
		t.Errorf("name %q has %d characters, KubeRay allows 47", rj.Name, len(rj.Name))
	}
	if errs := validation.IsDNS1035Label(rj.Name); len(errs) > 0 {
		t.Errorf("name %q: %v", rj.Name, errs)
	}
	// A fleet name with a '-' where the cut falls must not leave a trailing '-'.
	dashed := builder.MakeAgentFleet(strings.Repeat("a", 37)+"-b", "agents").Job(v1alpha1.JobSpec{Name: "j", Entrypoint: "x"}).Obj()
	if name := buildJob(t, dashed, "j", rayspecs.JobOptions{}).Name; strings.Contains(name, "--") {
		t.Errorf("name %q has an empty segment", name)
	}
}

func TestRayJobErrors(t *testing.T) {
	if _, err := rayspecs.RayJob(fleet().Job(eval).Obj(), "missing", rayspecs.JobOptions{}); err == nil || !strings.Contains(err.Error(), `no job "missing"`) {
		t.Errorf("unknown job: err = %v", err)
	}
	bad := eval
	bad.RuntimeEnvYAML = "- just\n- a list\n"
	if _, err := rayspecs.RayJob(fleet().Job(bad).Obj(), "eval", rayspecs.JobOptions{}); err == nil || !strings.Contains(err.Error(), "runtimeEnvYAML is not a YAML mapping") {
		t.Errorf("runtimeEnvYAML a list: err = %v", err)
	}
}
