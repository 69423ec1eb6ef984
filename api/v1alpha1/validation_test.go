package v1alpha1_test

import (
	"context"
	"os"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/builder"
	"github.com/agentfleet/agentfleet/test/cluster"
	"github.com/agentfleet/agentfleet/test/crdschema"
)

// These tests run the CRD's schema and CEL rules in a real kube-apiserver (envtest).
var k8s client.Client

func TestMain(m *testing.M) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	os.Exit(cluster.RunWithAPIServer(m, scheme, func(c client.Client) { k8s = c }))
}

func apiServer(t *testing.T) client.Client {
	t.Helper()
	if k8s == nil {
		t.Skip("needs kube-apiserver (skipped in -short mode)")
	}
	return k8s
}

func offlineValidator(t *testing.T) *crdschema.Validator {
	t.Helper()
	v, err := crdschema.Load("../../config/crd/bases/agentfleet.dev_agentfleets.yaml", "v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func fleet() *builder.FleetWrapper { return builder.MakeAgentFleet("agents", "default") }

func TestInvalidFleetsAreRefusedWithTheirRule(t *testing.T) {
	c := apiServer(t)
	cases := map[string]struct {
		fleet *v1alpha1.AgentFleet
		want  string // a part of the API server's message
	}{
		"too many replicas": {fleet().Replicas(10001).Obj(), "spec.replicas: Invalid value: 10001: spec.replicas in body should be less than or equal to 10000"},
		"negative replicas": {fleet().Replicas(-1).Obj(), "spec.replicas in body should be greater than or equal to 0"},
		"too many GPUs":     {fleet().GPUs(17, "").Obj(), "spec.worker.gpus in body should be less than or equal to 16"},
		"GPU product without GPUs": {fleet().GPUs(0, "NVIDIA-H100-80GB-HBM3").Obj(),
			"gpuProduct requires gpus > 0: a worker without GPUs cannot ask for a GPU product"},
		"duplicate job names": {fleet().Job(v1alpha1.JobSpec{Name: "eval", Entrypoint: "python eval.py"}).
			Job(v1alpha1.JobSpec{Name: "eval", Entrypoint: "python other.py"}).Obj(), `spec.jobs[1]: Duplicate value: {"name":"eval"}`},
		"cron with words": {fleet().Job(v1alpha1.JobSpec{Name: "nightly", Entrypoint: "python eval.py", Schedule: "every night at 3"}).Obj(),
			"schedule must be cron syntax"},
		"cron with four fields": {fleet().Job(v1alpha1.JobSpec{Name: "nightly", Entrypoint: "python eval.py", Schedule: "0 3 * *"}).Obj(),
			"schedule must be cron syntax"},
		"a token budget without a heartbeat": {fleet().Mutate(func(f *v1alpha1.AgentFleet) {
			f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxTokens: ptr.To[int64](1000)}
		}).Obj(), "budgets other than maxCostPerDay need spec.health.heartbeat"},
		"Pause without a fleet budget": {fleet().Heartbeat(10, 300, 20, 500).Mutate(func(f *v1alpha1.AgentFleet) {
			f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxTokens: ptr.To[int64](1000), OnExceeded: v1alpha1.BudgetPause}
		}).Obj(), "onExceeded: Pause needs a fleet budget to exceed"},
		"a cost that is not a decimal": {fleet().Mutate(func(f *v1alpha1.AgentFleet) {
			f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxCostPerDay: "$400"}
		}).Obj(), "spec.budgets.maxCostPerDay in body should match"},
		"maxUnavailable zero": {fleet().MaxUnavailable(intstr.FromInt32(0)).Obj(),
			"maxUnavailable must be a count of at least 1 or a percentage from 1% to 100%"},
		"maxUnavailable over 100%": {fleet().MaxUnavailable(intstr.FromString("150%")).Obj(),
			"maxUnavailable must be a count of at least 1 or a percentage from 1% to 100%"},
		"maxUnavailable not a percentage": {fleet().MaxUnavailable(intstr.FromString("half")).Obj(),
			"maxUnavailable must be a count of at least 1 or a percentage from 1% to 100%"},
		"OpenAI key in env": {fleet().Env("OPENAI_API_KEY", "sk-proj-4f9a8b7c6d5e4f3a2b1c").Obj(),
			"the value looks like a provider API key (sk-…, sk-ant-…, AKIA…): put it in a Secret and reference it from secretEnv"},
		"Anthropic key in env": {fleet().Env("ANTHROPIC_API_KEY", "sk-ant-api03-AbCdEfGhIjKlMnOpQrSt").Obj(),
			"the value looks like a provider API key"},
		"AWS access key in env": {fleet().Env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE").Obj(),
			"the value looks like a provider API key"},
		"key inside a header value": {fleet().Env("AUTH_HEADER", "Bearer sk-abcdefghijklmnopqrstuv").Obj(),
			"the value looks like a provider API key"},
		"reserved env name": {fleet().Env(heartbeatapi.EnvPromptFile, "/tmp/p").Obj(),
			"names starting with AGENTFLEET_ are set by the operator"},
		"name in env and secretEnv": {fleet().Env("MODEL_TOKEN", "public").SecretEnv("MODEL_TOKEN", "llm", "token").Obj(),
			"a variable is named in both env and secretEnv"},
		"secretEnv without key": {fleet().SecretEnv("TOKEN", "llm", "").Obj(),
			"spec.secretEnv[0].secretKeyRef.key: Invalid value"},
		"no image":                {fleet().Image("").Obj(), "spec.image: Invalid value: \"\": spec.image in body should be at least 1 chars long"},
		"image with a space":      {fleet().Image("agents: latest").Obj(), "image must not contain white space"},
		"rayVersion not a number": {fleet().RayVersion("latest").Obj(), "spec.rayVersion in body should match"},
		"model version with a space": {fleet().Model("claude", "v 1").Obj(),
			"model.version becomes a label value"},
		"model endpoint not http": {fleet().ModelEndpoint("ftp://models.internal/claude").Obj(),
			"model.endpoint must be an http or https URL"},
		"name not DNS-1035": {builder.MakeAgentFleet("1st-fleet", "default").Obj(),
			"metadata.name must be a DNS-1035 label"},
		"name too long for a RayCluster": {builder.MakeAgentFleet(strings.Repeat("a", 54), "default").Obj(),
			"of at most 53 characters: it names the fleet's RayCluster"},
		"deadline not after interval": {fleet().Heartbeat(30, 30, 10, 100).Obj(),
			"progressDeadlineSeconds must be greater than intervalSeconds"},
		"job name with capitals": {fleet().Job(v1alpha1.JobSpec{Name: "Eval", Entrypoint: "python eval.py"}).Obj(),
			"job name must be a DNS-1035 label"},
		"job without entrypoint": {fleet().Job(v1alpha1.JobSpec{Name: "eval"}).Obj(),
			"spec.jobs[0].entrypoint: Invalid value"},
		"job deadline zero": {fleet().Job(v1alpha1.JobSpec{Name: "eval", Entrypoint: "x", ActiveDeadlineSeconds: ptr.To(int32(0))}).Obj(),
			"spec.jobs[0].activeDeadlineSeconds in body should be greater than or equal to 1"},
		"same dependency twice": {fleet().DependsOn("apps/v1", "StatefulSet", "qdrant").DependsOn("apps/v1", "StatefulSet", "qdrant").Obj(),
			"dependsOn lists the same object twice"},
		"dependency kind lower-case": {fleet().DependsOn("apps/v1", "statefulset", "qdrant").Obj(),
			"spec.dependsOn[0].kind in body should match"},
		"cost center with a space": {fleet().CostCenter("ml research").Obj(),
			"costCenter becomes a label value"},
	}
	offline := offlineValidator(t)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := tc.fleet
			f.UID, f.Generation = "", 0
			// The offline validator the fuzz test trusts must refuse it too.
			if errs := offline.Object(f.DeepCopy()); len(errs) == 0 {
				t.Errorf("crdschema accepts what the API server should refuse")
			}
			err := c.Create(ctx, f)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("create: err = %v, want Invalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("message does not say %q:\n%v", tc.want, err)
			}
			// Nothing is created.
			getErr := c.Get(ctx, client.ObjectKeyFromObject(f), &v1alpha1.AgentFleet{})
			if !apierrors.IsNotFound(getErr) {
				t.Errorf("after a refused create, get: %v, want NotFound", getErr)
			}
		})
	}
}

func TestValidFleetsAreAcceptedAndDefaulted(t *testing.T) {
	c := apiServer(t)
	ctx := context.Background()
	cases := map[string]*v1alpha1.AgentFleet{
		"minimal": builder.MakeAgentFleet("minimal", "default").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Replicas = nil }).Obj(),
		"gpu": builder.MakeAgentFleet("gpu", "default").Replicas(4).GPUs(2, "NVIDIA-H100-80GB-HBM3").
			Prompt("prompts", "system.md").SecretEnv("ANTHROPIC_API_KEY", "llm-keys", "anthropic").
			Env("LOG_LEVEL", "info").Env("TOOLS", "search,sk-learn").ModelEndpoint("https://models.internal/v1").Obj(),
		"jobs": builder.MakeAgentFleet("jobs", "default").
			Job(v1alpha1.JobSpec{Name: "nightly", Entrypoint: "python eval.py", Schedule: "0 3 * * *"}).
			Job(v1alpha1.JobSpec{Name: "hourly", Entrypoint: "python sweep.py", Schedule: "@hourly"}).
			Job(v1alpha1.JobSpec{Name: "ranges", Entrypoint: "python x.py", Schedule: "*/15 9-17 * * MON-FRI"}).
			Job(v1alpha1.JobSpec{Name: "once", Entrypoint: "python once.py", ActiveDeadlineSeconds: ptr.To(int32(600))}).
			MaxUnavailable(intstr.FromInt32(2)).Obj(),
		"zero replicas": builder.MakeAgentFleet("zero", "default").Replicas(0).MaxUnavailable(intstr.FromString("100%")).Obj(),
	}
	offline := offlineValidator(t)
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			f.UID, f.Generation = "", 0
			if errs := offline.Object(f.DeepCopy()); len(errs) > 0 {
				t.Errorf("crdschema refuses a valid fleet: %v", errs.ToAggregate())
			}
			if err := c.Create(ctx, f); err != nil {
				t.Fatalf("create: %v", err)
			}
			got := &v1alpha1.AgentFleet{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(f), got); err != nil {
				t.Fatal(err)
			}
			if got.Spec.Replicas == nil {
				t.Error("replicas not defaulted")
			}
			if got.Spec.Rollout.MaxUnavailable == nil {
				t.Error("rollout.maxUnavailable not defaulted")
			}
			if got.Spec.Health.RestartBudget.MaxRestarts == nil || got.Spec.Health.RestartBudget.WindowSeconds == 0 {
				t.Errorf("restart budget not defaulted: %+v", got.Spec.Health.RestartBudget)
			}
		})
	}
	got := &v1alpha1.AgentFleet{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "minimal"}, got); err != nil {
		t.Fatal(err)
	}
	if *got.Spec.Replicas != 1 || got.Spec.Rollout.MaxUnavailable.String() != "25%" || *got.Spec.Health.RestartBudget.MaxRestarts != 10 || got.Spec.Health.RestartBudget.WindowSeconds != 3600 {
		t.Errorf("defaults: replicas %d, maxUnavailable %s, restartBudget %d/%ds; want 1, 25%%, 10/3600s",
			*got.Spec.Replicas, got.Spec.Rollout.MaxUnavailable.String(), *got.Spec.Health.RestartBudget.MaxRestarts, got.Spec.Health.RestartBudget.WindowSeconds)
	}
}

func TestMaxStepsPerTask(t *testing.T) {
	hb := &v1alpha1.HeartbeatSpec{MaxStepsPerTask: 500}
	steps := int32(40)
	for name, tc := range map[string]struct {
		spec v1alpha1.AgentFleetSpec
		want int32
	}{
		"no heartbeat: no steps counted":            {v1alpha1.AgentFleetSpec{Budgets: &v1alpha1.BudgetsSpec{MaxSteps: &steps}}, 0},
		"the deprecated field":                      {v1alpha1.AgentFleetSpec{Health: v1alpha1.HealthSpec{Heartbeat: hb}}, 500},
		"budgets.maxSteps wins":                     {v1alpha1.AgentFleetSpec{Health: v1alpha1.HealthSpec{Heartbeat: hb}, Budgets: &v1alpha1.BudgetsSpec{MaxSteps: &steps}}, 40},
		"budgets without maxSteps: the heartbeat's": {v1alpha1.AgentFleetSpec{Health: v1alpha1.HealthSpec{Heartbeat: hb}, Budgets: &v1alpha1.BudgetsSpec{}}, 500},
	} {
		f := &v1alpha1.AgentFleet{Spec: tc.spec}
		if got := f.MaxStepsPerTask(); got != tc.want {
			t.Errorf("%s: %d, want %d", name, got, tc.want)
		}
	}
}
