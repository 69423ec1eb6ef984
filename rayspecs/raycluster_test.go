package rayspecs_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/rayspecs"
	"github.com/agentfleet/agentfleet/test/builder"
)

const prompt = "You are a careful research agent."

func fleet() *builder.FleetWrapper { return builder.MakeAgentFleet("research", "agents") }

func build(t *testing.T, f *v1alpha1.AgentFleet, in rayspecs.Inputs) *rayv1.RayCluster {
	t.Helper()
	rc, err := rayspecs.RayCluster(f, in, rayspecs.Options{})
	if err != nil {
		t.Fatalf("RayCluster: %v", err)
	}
	if err := rayutils.ValidateRayClusterMetadata(rc.ObjectMeta); err != nil {
		t.Errorf("KubeRay refuses the metadata: %v", err)
	}
	if err := rayutils.ValidateRayClusterSpec(&rc.Spec, rc.Annotations); err != nil {
		t.Errorf("KubeRay refuses the spec: %v", err)
	}
	return rc
}

func workers(rc *rayv1.RayCluster) *rayv1.WorkerGroupSpec { return &rc.Spec.WorkerGroupSpecs[0] }

func TestGPUScheduling(t *testing.T) {
	gpuToleration := []corev1.Toleration{{Key: gpu.TaintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	healthy := corev1.NodeSelectorRequirement{Key: gpu.HealthLabel, Operator: corev1.NodeSelectorOpNotIn, Values: []string{"unhealthy"}}
	affinity := func(exprs ...corev1.NodeSelectorRequirement) *corev1.Affinity {
		return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: exprs}},
		}}}
	}
	type want struct {
		GPULimit    *resource.Quantity
		NumGPUs     string
		Tolerations []corev1.Toleration
		Affinity    *corev1.Affinity
	}
	cases := map[string]struct {
		fleet *v1alpha1.AgentFleet
		want  want
	}{
		"CPU-only fleet gets none of it": {fleet().Obj(), want{}},
		"GPUs without a product": {fleet().GPUs(2, "").Obj(), want{
			GPULimit: ptr.To(resource.MustParse("2")), NumGPUs: "2", Tolerations: gpuToleration, Affinity: affinity(healthy),
		}},
		"GPUs of a product": {fleet().GPUs(1, "NVIDIA-H100-80GB-HBM3").Obj(), want{
			GPULimit: ptr.To(resource.MustParse("1")), NumGPUs: "1", Tolerations: gpuToleration,
			Affinity: affinity(corev1.NodeSelectorRequirement{Key: gpu.ProductLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{"NVIDIA-H100-80GB-HBM3"}}, healthy),
		}},
		"user tolerations come after the GPU one": {fleet().GPUs(8, "").Mutate(func(f *v1alpha1.AgentFleet) {
			f.Spec.Worker.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "agents", Effect: corev1.TaintEffectNoSchedule}}
		}).Obj(), want{
			GPULimit: ptr.To(resource.MustParse("8")), NumGPUs: "8",
			Tolerations: append(gpuToleration, corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "agents", Effect: corev1.TaintEffectNoSchedule}),
			Affinity:    affinity(healthy),
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := workers(build(t, tc.fleet, rayspecs.Inputs{}))
			c := w.Template.Spec.Containers[0]
			got := want{NumGPUs: w.RayStartParams["num-gpus"], Tolerations: w.Template.Spec.Tolerations, Affinity: w.Template.Spec.Affinity}
			if q, ok := c.Resources.Limits[gpu.Resource]; ok {
				got.GPULimit = &q
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("GPU scheduling (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWorkerGroupIsHeldAtReplicas(t *testing.T) {
	for name, replicas := range map[string]int32{"zero": 0, "one": 1, "many": 250} {
		t.Run(name, func(t *testing.T) {
			w := workers(build(t, fleet().Replicas(replicas).Obj(), rayspecs.Inputs{}))
			got := []int32{*w.Replicas, *w.MinReplicas, *w.MaxReplicas}
			if diff := cmp.Diff([]int32{replicas, replicas, replicas}, got); diff != "" {
				t.Errorf("replicas, minReplicas, maxReplicas (-want +got):\n%s", diff)
			}
			if w.GroupName != "agents" {
				t.Errorf("group %q, want agents", w.GroupName)
			}
		})
	}
}

func TestPromptIsMountedAndHashed(t *testing.T) {
	f := fleet().Prompt("research-prompt", "system.md").Obj()
	rc := build(t, f, rayspecs.Inputs{Prompt: ptr.To(prompt)})
	hash := rayspecs.PromptHash(prompt)
	if len(hash) != 64 {
		t.Fatalf("prompt hash %q is not a hex SHA-256", hash)
	}
	for name, tmpl := range map[string]corev1.PodTemplateSpec{"head": rc.Spec.HeadGroupSpec.Template, "worker": workers(rc).Template} {
		t.Run(name, func(t *testing.T) {
			if got := tmpl.Annotations[v1alpha1.AnnotationPromptHash]; got != hash {
				t.Errorf("annotation %s = %q, want %q", v1alpha1.AnnotationPromptHash, got, hash)
			}
			if got := tmpl.Labels[v1alpha1.LabelPromptHash]; got != hash[:16] {
				t.Errorf("label %s = %q, want %q", v1alpha1.LabelPromptHash, got, hash[:16])
			}
			wantVolume := []corev1.Volume{{Name: "agentfleet-prompt", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "research-prompt"},
				Items:                []corev1.KeyToPath{{Key: "system.md", Path: "system.md"}},
				DefaultMode:          ptr.To(int32(0o444)),
			}}}}
			if diff := cmp.Diff(wantVolume, tmpl.Spec.Volumes); diff != "" {
				t.Errorf("volumes (-want +got):\n%s", diff)
			}
			c := tmpl.Spec.Containers[0]
			if diff := cmp.Diff([]corev1.VolumeMount{{Name: "agentfleet-prompt", MountPath: "/etc/agentfleet/prompt", ReadOnly: true}}, c.VolumeMounts); diff != "" {
				t.Errorf("mounts (-want +got):\n%s", diff)
			}
			if got := envValue(c, heartbeatapi.EnvPromptFile); got != "/etc/agentfleet/prompt/system.md" {
				t.Errorf("%s = %q", heartbeatapi.EnvPromptFile, got)
			}
		})
	}
}

func TestPromptWithoutTextIsAnError(t *testing.T) {
	_, err := rayspecs.RayCluster(fleet().Prompt("research-prompt", "system.md").Obj(), rayspecs.Inputs{}, rayspecs.Options{})
	if err == nil || !strings.Contains(err.Error(), `ConfigMap "research-prompt" key "system.md"`) {
		t.Errorf("err = %v, want one naming the ConfigMap and key", err)
	}
}

func TestEnvironment(t *testing.T) {
	f := fleet().ModelEndpoint("https://models.internal/v1").Env("LOG_LEVEL", "debug").SecretEnv("ANTHROPIC_API_KEY", "llm-keys", "anthropic").
		Heartbeat(10, 60, 20, 500).Obj()
	rc := build(t, f, rayspecs.Inputs{})
	got := workers(rc).Template.Spec.Containers[0].Env
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}
	}
	want := []corev1.EnvVar{
		{Name: heartbeatapi.EnvFleet, Value: "research"},
		{Name: heartbeatapi.EnvNamespace, ValueFrom: field("metadata.namespace")},
		{Name: heartbeatapi.EnvPodName, ValueFrom: field("metadata.name")},
		{Name: heartbeatapi.EnvModelName, Value: "claude-sonnet-4-5"},
		{Name: heartbeatapi.EnvModelVersion, Value: "2025-09-29"},
		{Name: heartbeatapi.EnvModelEndpoint, Value: "https://models.internal/v1"},
		{Name: "LOG_LEVEL", Value: "debug"},
		{Name: "ANTHROPIC_API_KEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "llm-keys"}, Key: "anthropic"}}},
		{Name: heartbeatapi.EnvHeartbeatInterval, Value: "10"},
		{Name: heartbeatapi.EnvMaxStepsPerTask, Value: "500"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("worker env (-want +got):\n%s", diff)
	}
	if head := rc.Spec.HeadGroupSpec.Template.Spec.Containers[0]; envValue(head, heartbeatapi.EnvHeartbeatInterval) != "" {
		t.Error("the head, which runs no agent, got a heartbeat interval")
	}
}

func TestBudgetEnvIsNoNewRevision(t *testing.T) {
	base := fleet().Heartbeat(10, 60, 20, 500).Obj()
	budgeted := base.DeepCopy()
	budgeted.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxSteps: ptr.To[int32](40), MaxTokens: ptr.To[int64](20000), MaxDurationSeconds: ptr.To[int32](600), MaxCost: "0.75"}
	w0, w1 := workers(build(t, base, rayspecs.Inputs{})), workers(build(t, budgeted, rayspecs.Inputs{}))
	want := []corev1.EnvVar{
		{Name: heartbeatapi.EnvMaxStepsPerTask, Value: "40"}, // budgets.maxSteps wins over the heartbeat's 500
		{Name: heartbeatapi.EnvMaxTokensPerTask, Value: "20000"},
		{Name: heartbeatapi.EnvMaxTaskSeconds, Value: "600"},
		{Name: heartbeatapi.EnvMaxTaskCost, Value: "0.75"},
	}
	env := w1.Template.Spec.Containers[0].Env
	if diff := cmp.Diff(want, env[len(env)-len(want):]); diff != "" {
		t.Errorf("budget env (-want +got):\n%s", diff)
	}
	if a, b := w0.Template.Labels[v1alpha1.LabelWorkerHash], w1.Template.Labels[v1alpha1.LabelWorkerHash]; a != b {
		t.Errorf("a budget change changed the worker revision %s to %s: it would roll every worker", a, b)
	}
	if got := rayspecs.BudgetEnv(fleet().Obj()); got != nil {
		t.Errorf("a fleet without heartbeat or budgets got budget env %v", got)
	}
}

func TestLabelsOwnerAndRayNodeLabels(t *testing.T) {
	f := fleet().CostCenter("research").Obj()
	rc := build(t, f, rayspecs.Inputs{})
	wantOwner := []metav1.OwnerReference{{APIVersion: "agentfleet.dev/v1alpha1", Kind: "AgentFleet", Name: "research", UID: "uid-research",
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	if diff := cmp.Diff(wantOwner, rc.OwnerReferences); diff != "" {
		t.Errorf("owner references (-want +got):\n%s", diff)
	}
	pod := workers(rc).Template.Labels
	for k, v := range map[string]string{
		v1alpha1.LabelFleet: "research", v1alpha1.LabelModelVersion: "2025-09-29", v1alpha1.LabelRole: "agent",
		v1alpha1.LabelCostCenter: "research", "app.kubernetes.io/managed-by": "agentfleet-operator",
	} {
		if pod[k] != v {
			t.Errorf("worker pod label %s = %q, want %q", k, pod[k], v)
		}
	}
	// ArgoCD v2 tracks what an Application owns by app.kubernetes.io/instance: a child carrying its
	// fleet's name there would be pruned by an Application named like the fleet.
	for what, labels := range map[string]map[string]string{"RayCluster": rc.Labels, "worker pod": pod, "head pod": rc.Spec.HeadGroupSpec.Template.Labels} {
		if v, ok := labels["app.kubernetes.io/instance"]; ok {
			t.Errorf("%s label app.kubernetes.io/instance = %q: ArgoCD's tracking label", what, v)
		}
	}
	if diff := cmp.Diff(map[string]string{v1alpha1.LabelFleet: "research", v1alpha1.LabelRole: "agent", v1alpha1.LabelModelVersion: "2025-09-29"}, workers(rc).Labels); diff != "" {
		t.Errorf("Ray node labels of workers (-want +got):\n%s", diff)
	}
	head := rc.Spec.HeadGroupSpec
	if head.RayStartParams["dashboard-host"] != "0.0.0.0" || head.RayStartParams["metrics-export-port"] != "8080" || head.RayStartParams["num-cpus"] != "0" {
		t.Errorf("head rayStartParams = %v, want the dashboard exposed, metrics on 8080 and no work scheduled on the head", head.RayStartParams)
	}
	if head.Labels[v1alpha1.LabelFleet] != "research" {
		t.Errorf("Ray node labels of the head = %v", head.Labels)
	}
}

// The template hash leaves out replicas, workersToDelete and suspend, and changes with what the
// workers run; the worker hash changes only with the worker template.
func TestHashes(t *testing.T) {
	base := fleet().Prompt("p", "system.md")
	baseRC := build(t, base.Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt)})
	cases := map[string]struct {
		rc                       *rayv1.RayCluster
		templateSame, workerSame bool
	}{
		"replicas": {build(t, fleet().Prompt("p", "system.md").Replicas(9).Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt)}), true, true},
		"suspend":  {build(t, fleet().Prompt("p", "system.md").Suspend(true).Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt)}), true, true},
		"workersToDelete": {func() *rayv1.RayCluster {
			rc := baseRC.DeepCopy()
			workers(rc).ScaleStrategy.WorkersToDelete = []string{"research-agents-worker-abcde"}
			return rc
		}(), true, true},
		"prompt text":   {build(t, fleet().Prompt("p", "system.md").Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt + " Be brief.")}), false, false},
		"model version": {build(t, fleet().Prompt("p", "system.md").Model("claude-sonnet-4-5", "2025-10-15").Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt)}), false, false},
		"image":         {build(t, fleet().Prompt("p", "system.md").Image("agent:2").Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt)}), false, false},
		"env":           {build(t, fleet().Prompt("p", "system.md").Env("X", "1").Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt)}), false, false},
		"head memory": {build(t, fleet().Prompt("p", "system.md").Mutate(func(f *v1alpha1.AgentFleet) {
			f.Spec.Head.Memory = ptr.To(resource.MustParse("16Gi"))
		}).Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt)}), false, true},
	}
	baseHash := mustTemplateHash(t, baseRC)
	if baseHash != baseRC.Annotations[v1alpha1.AnnotationTemplateHash] {
		t.Fatalf("annotation %s = %q, want TemplateHash %q", v1alpha1.AnnotationTemplateHash, baseRC.Annotations[v1alpha1.AnnotationTemplateHash], baseHash)
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := mustTemplateHash(t, tc.rc) == baseHash; got != tc.templateSame {
				t.Errorf("template hash unchanged = %v, want %v", got, tc.templateSame)
			}
			if got := rayspecs.WorkerHash(tc.rc) == rayspecs.WorkerHash(baseRC); got != tc.workerSame {
				t.Errorf("worker hash unchanged = %v, want %v", got, tc.workerSame)
			}
		})
	}
}

func mustTemplateHash(t *testing.T, rc *rayv1.RayCluster) string {
	t.Helper()
	h, err := rayspecs.TemplateHash(&rc.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestPodTemplateOverride(t *testing.T) {
	override := func(yml string) func(*v1alpha1.AgentFleet) {
		return func(f *v1alpha1.AgentFleet) {
			data, err := yaml.YAMLToJSON([]byte(yml))
			if err != nil {
				panic(err)
			}
			f.Spec.Worker.PodTemplate = &runtime.RawExtension{Raw: data}
		}
	}
	t.Run("merges by name and wins", func(t *testing.T) {
		f := fleet().Mutate(override(`
metadata:
  annotations:
    sidecar.istio.io/inject: "false"
spec:
  priorityClassName: agents
  containers:
  - name: ray-worker
    env:
    - name: LOG_LEVEL
      value: trace
  - name: browser
    image: chromium:headless
`)).Obj()
		tmpl := workers(build(t, f, rayspecs.Inputs{})).Template
		if tmpl.Spec.PriorityClassName != "agents" || tmpl.Annotations["sidecar.istio.io/inject"] != "false" {
			t.Errorf("override not applied: priorityClassName %q, annotations %v", tmpl.Spec.PriorityClassName, tmpl.Annotations)
		}
		names := []string{}
		for _, c := range tmpl.Spec.Containers {
			names = append(names, c.Name)
		}
		if diff := cmp.Diff([]string{"ray-worker", "browser"}, names); diff != "" {
			t.Errorf("containers (-want +got):\n%s", diff)
		}
		ray := tmpl.Spec.Containers[0]
		if ray.Image != "registry.example.com/agents/researcher:1.0" || envValue(ray, "LOG_LEVEL") != "trace" || envValue(ray, heartbeatapi.EnvFleet) != "research" {
			t.Errorf("the Ray container lost what was generated or missed the override: image %q, env %v", ray.Image, ray.Env)
		}
	})
	t.Run("an unknown field is an error naming it", func(t *testing.T) {
		f := fleet().Mutate(override("spec:\n  containers:\n  - name: ray-worker\n    imagePullPolicyy: Always\n")).Obj()
		_, err := rayspecs.RayCluster(f, rayspecs.Inputs{}, rayspecs.Options{})
		if err == nil || !strings.Contains(err.Error(), "spec.worker.podTemplate") || !strings.Contains(err.Error(), "imagePullPolicyy") {
			t.Errorf("err = %v, want one naming spec.worker.podTemplate and the unknown field", err)
		}
	})
}

// The same inputs give byte-identical YAML, however Go orders map iteration.
func TestDeterministic(t *testing.T) {
	f := fleet().GPUs(2, "NVIDIA-H100-80GB-HBM3").Prompt("p", "k").CostCenter("x").Env("A", "1").Env("B", "2").
		Mutate(func(f *v1alpha1.AgentFleet) {
			f.Spec.Worker.NodeSelector = map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"}
		}).Obj()
	first, err := yaml.Marshal(build(t, f, rayspecs.Inputs{Prompt: ptr.To(prompt)}))
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		again, err := yaml.Marshal(build(t, f.DeepCopy(), rayspecs.Inputs{Prompt: ptr.To(prompt)}))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(first), string(again)); diff != "" {
			t.Fatalf("second build differs (-first +again):\n%s", diff)
		}
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// The Ray dashboard's Grafana and Prometheus settings go to the head only, when configured, and a
// change of them does not roll the agent workers.
func TestDashboardEnv(t *testing.T) {
	f := fleet().Obj()
	plain, err := rayspecs.RayCluster(f, rayspecs.Inputs{}, rayspecs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := rayspecs.Options{Dashboard: rayspecs.DashboardOptions{
		GrafanaHost: "http://grafana.monitoring.svc:3000", GrafanaIframeHost: "https://grafana.example.com",
		PrometheusHost: "http://prometheus.monitoring.svc:9090",
	}}
	rc, err := rayspecs.RayCluster(f, rayspecs.Inputs{}, o)
	if err != nil {
		t.Fatal(err)
	}
	head := rc.Spec.HeadGroupSpec.Template.Spec.Containers[0]
	want := map[string]string{
		"RAY_GRAFANA_HOST": "http://grafana.monitoring.svc:3000", "RAY_GRAFANA_IFRAME_HOST": "https://grafana.example.com",
		"RAY_PROMETHEUS_HOST": "http://prometheus.monitoring.svc:9090", "RAY_PROMETHEUS_NAME": "",
	}
	for name, v := range want {
		if got := envValue(head, name); got != v {
			t.Errorf("head env %s = %q, want %q", name, got, v)
		}
	}
	for what, c := range map[string]corev1.Container{"worker": workers(rc).Template.Spec.Containers[0], "unconfigured head": plain.Spec.HeadGroupSpec.Template.Spec.Containers[0]} {
		for name := range want {
			if envValue(c, name) != "" {
				t.Errorf("%s has %s", what, name)
			}
		}
	}
	if rayspecs.WorkerHash(rc) != rayspecs.WorkerHash(plain) {
		t.Error("the dashboard settings changed the worker hash: a change of them would roll every agent")
	}
}

// A canary's layout: the stable group as the RayCluster has it (template, Ray labels, start
// parameters) at its replicas, the built group as agents-canary at its own; the template hash covers
// the layout, not the replicas.
func TestCanaryLayout(t *testing.T) {
	old := build(t, fleet().Heartbeat(10, 60, 20, 500).Obj(), rayspecs.Inputs{})
	changed := fleet().Heartbeat(10, 60, 20, 500).Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Model.Version = "2026-01-01" }).Obj()
	built := build(t, changed, rayspecs.Inputs{})
	stable := rayspecs.Group(old, v1alpha1.WorkerGroup)
	rc := built.DeepCopy()
	if err := rayspecs.CanaryLayout(rc, stable, 3, true, 1); err != nil {
		t.Fatal(err)
	}
	if n := len(rc.Spec.WorkerGroupSpecs); n != 2 {
		t.Fatalf("%d worker groups, want 2", n)
	}
	s, c := rc.Spec.WorkerGroupSpecs[0], rc.Spec.WorkerGroupSpecs[1]
	if s.GroupName != v1alpha1.WorkerGroup || c.GroupName != v1alpha1.CanaryGroup {
		t.Errorf("groups %s, %s", s.GroupName, c.GroupName)
	}
	if diff := cmp.Diff(stable.Template, s.Template); diff != "" {
		t.Errorf("the stable group's template is not the RayCluster's (-want +got):\n%s", diff)
	}
	if s.Labels[v1alpha1.LabelModelVersion] != "2025-09-29" || c.Labels[v1alpha1.LabelModelVersion] != "2026-01-01" {
		t.Errorf("Ray labels: stable %v, canary %v: each group its own revision's", s.Labels, c.Labels)
	}
	if *s.Replicas != 3 || *s.MinReplicas != 3 || *s.MaxReplicas != 3 || *c.Replicas != 1 || *c.MinReplicas != 1 || *c.MaxReplicas != 1 {
		t.Errorf("replicas: stable %d, canary %d", *s.Replicas, *c.Replicas)
	}
	if rayspecs.GroupHash(rc, v1alpha1.CanaryGroup) != rayspecs.WorkerHash(built) {
		t.Error("the canary group does not run the revision built")
	}
	hash, err := rayspecs.TemplateHash(&rc.Spec)
	if err != nil || rc.Annotations[v1alpha1.AnnotationTemplateHash] != hash {
		t.Errorf("template hash annotation %s, of the layout %s (%v)", rc.Annotations[v1alpha1.AnnotationTemplateHash], hash, err)
	}
	if err := rayspecs.CanaryLayout(rc, nil, 4, false, 0); err == nil {
		t.Error("laying out a cluster already laid out: no error")
	}
}

func TestPreviewClusterNamesTakeTurnsWithinKubeRaysLimit(t *testing.T) {
	long := strings.Repeat("a", 53)
	for _, tc := range []struct{ fleet, active, want string }{
		{"research", "research", "research-bg"},
		{"research", "research-bg", "research"},
		{long, long, long[:44] + "-" + shortHash(long) + "-bg"},
		{long, long[:44] + "-" + shortHash(long) + "-bg", long},
	} {
		f := fleet().Mutate(func(f *v1alpha1.AgentFleet) { f.Name = tc.fleet }).Obj()
		got := rayspecs.PreviewClusterName(f, tc.active)
		if got != tc.want {
			t.Errorf("PreviewClusterName(%s, active %s) = %s, want %s", tc.fleet, tc.active, got, tc.want)
		}
		if err := rayutils.ValidateRayClusterMetadata(metav1.ObjectMeta{Name: got, Namespace: "agents"}); err != nil {
			t.Errorf("KubeRay refuses the preview's name %s: %v", got, err)
		}
	}
}

func TestHeadHashChangesOnlyWithTheHead(t *testing.T) {
	hash := func(f *v1alpha1.AgentFleet) string {
		t.Helper()
		rc := build(t, f, rayspecs.Inputs{Prompt: ptr.To(prompt)})
		h, err := rayspecs.HeadHash(f)
		if err != nil || rc.Annotations[v1alpha1.AnnotationHeadHash] != h {
			t.Fatalf("HeadHash = %s, %v; the RayCluster's annotation %s", h, err, rc.Annotations[v1alpha1.AnnotationHeadHash])
		}
		return h
	}
	base := hash(fleet().Prompt("p", "k").Obj())
	for name, f := range map[string]*v1alpha1.AgentFleet{
		"an image":         fleet().Prompt("p", "k").Image("agent:2").Obj(),
		"a model version":  fleet().Prompt("p", "k").Model("m", "v2").Obj(),
		"an env":           fleet().Prompt("p", "k").Env("X", "1").Obj(),
		"worker resources": fleet().Prompt("p", "k").WorkerResources("3", "9Gi").Obj(),
	} {
		if got := hash(f); got != base {
			t.Errorf("%s changed the head hash: a worker roll carries it", name)
		}
	}
	for name, f := range map[string]*v1alpha1.AgentFleet{
		"rayVersion":     fleet().Prompt("p", "k").RayVersion("2.99.0").Obj(),
		"head resources": fleet().Prompt("p", "k").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Head.CPU = ptr.To(resource.MustParse("3")) }).Obj(),
	} {
		if got := hash(f); got == base {
			t.Errorf("%s left the head hash as it was: it needs a new RayCluster", name)
		}
	}
}

func TestKeepTemplates(t *testing.T) {
	running := build(t, fleet().Replicas(4).RayVersion("2.9.0").Prompt("p", "k").Obj(), rayspecs.Inputs{Prompt: ptr.To(prompt)})
	built := build(t, fleet().Replicas(6).RayVersion("2.10.0").Suspend(true).Prompt("p", "k").Obj(), rayspecs.Inputs{Prompt: ptr.To("another prompt")})
	if err := rayspecs.KeepTemplates(built, running); err != nil {
		t.Fatal(err)
	}
	want := running.Spec.DeepCopy()
	want.Suspend = ptr.To(true)
	g := &want.WorkerGroupSpecs[0]
	g.Replicas, g.MinReplicas, g.MaxReplicas = ptr.To[int32](6), ptr.To[int32](6), ptr.To[int32](6)
	if diff := cmp.Diff(*want, built.Spec); diff != "" {
		t.Errorf("kept spec (-want +got):\n%s", diff)
	}
	for _, k := range []string{v1alpha1.AnnotationTemplateHash, v1alpha1.AnnotationHeadHash} {
		if built.Annotations[k] != running.Annotations[k] {
			t.Errorf("annotation %s = %s, want the running RayCluster's %s", k, built.Annotations[k], running.Annotations[k])
		}
	}
}

// shortHash is the first five hex digits of a name's SHA-256.
func shortHash(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])[:5]
}
