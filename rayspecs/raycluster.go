// Package rayspecs builds the KubeRay objects of an AgentFleet: its RayCluster and the RayJobs of its
// jobs. The builders are pure: no client, no context, no environment, no clock. The same inputs give
// the same objects, byte for byte, so neither the controller nor ArgoCD ever sees a spurious diff.
package rayspecs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/utils/ptr"
	kjson "sigs.k8s.io/json"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/gpu"
)

// Container names, ports and paths of the generated pods.
const (
	HeadContainer   = "ray-head"
	WorkerContainer = "ray-worker"

	DashboardPort int32 = 8265
	GCSPort       int32 = 6379
	ClientPort    int32 = 10001
	MetricsPort   int32 = 8080

	promptVolume   = "agentfleet-prompt"
	promptMountDir = "/etc/agentfleet/prompt"
)

// Inputs are what the builder needs besides the fleet, resolved by the caller.
type Inputs struct {
	// Prompt is the prompt text, the value of the key spec.prompt.configMapRef names. Required when
	// the fleet has a prompt.
	Prompt *string
}

// Options are settings of the operator, not of the fleet.
type Options struct {
	// WorkerServiceAccount, when set, runs the agent workers of fleets without a heartbeat contract
	// as this ServiceAccount (those with one run as HeartbeatServiceAccount).
	WorkerServiceAccount string
	// Dashboard embeds Grafana's panels in the Ray dashboard: set on the head when configured.
	Dashboard DashboardOptions
}

// DashboardOptions are the Ray dashboard's settings for its metrics panels (Ray's documentation,
// "Embedding Grafana visualizations into Ray Dashboard"): the head gets each one set as its env var.
type DashboardOptions struct {
	// GrafanaHost is RAY_GRAFANA_HOST: Grafana as the head reaches it, e.g. http://grafana.monitoring.svc:3000.
	GrafanaHost string
	// GrafanaIframeHost is RAY_GRAFANA_IFRAME_HOST: Grafana as the user's browser reaches it.
	GrafanaIframeHost string
	// PrometheusHost is RAY_PROMETHEUS_HOST: the Prometheus that scrapes Ray's metrics.
	PrometheusHost string
	// PrometheusName is RAY_PROMETHEUS_NAME: the name of that Prometheus data source in Grafana.
	PrometheusName string
}

// env is the head's environment for the dashboard's panels, in a fixed order; nothing when unset.
func (d DashboardOptions) env() []corev1.EnvVar {
	var env []corev1.EnvVar
	for _, e := range []corev1.EnvVar{
		{Name: "RAY_GRAFANA_HOST", Value: d.GrafanaHost},
		{Name: "RAY_GRAFANA_IFRAME_HOST", Value: d.GrafanaIframeHost},
		{Name: "RAY_PROMETHEUS_HOST", Value: d.PrometheusHost},
		{Name: "RAY_PROMETHEUS_NAME", Value: d.PrometheusName},
	} {
		if e.Value != "" {
			env = append(env, e)
		}
	}
	return env
}

// Default resources, when the fleet sets none.
var (
	defaultHeadCPU      = resource.MustParse("1")
	defaultHeadMemory   = resource.MustParse("4Gi")
	defaultWorkerCPU    = resource.MustParse("1")
	defaultWorkerMemory = resource.MustParse("2Gi")
)

// ClusterName is the name of a fleet's RayCluster.
func ClusterName(f *v1alpha1.AgentFleet) string { return f.Name }

// blueGreenSuffix names a fleet's second RayCluster.
const blueGreenSuffix = "-bg"

// PreviewClusterName is the name of the preview RayCluster of a blue-green rollout beside the active
// one: the fleet's two names take turns, <fleet> and <fleet>-bg (the fleet's name shortened to keep
// within KubeRay's 53 characters).
func PreviewClusterName(f *v1alpha1.AgentFleet, active string) string {
	if active != ClusterName(f) {
		return ClusterName(f)
	}
	name := f.Name
	if n := rayutils.MaxRayClusterNameLength - len(blueGreenSuffix); len(name) > n {
		// A hash of the whole name in place of what is cut: two fleets whose names differ only
		// past the cut must not take each other's preview.
		sum := sha256.Sum256([]byte(f.Name))
		name = name[:n-6] + "-" + hex.EncodeToString(sum[:])[:5]
	}
	return name + blueGreenSuffix
}

// HeadHash hashes what the head runs that a worker roll cannot carry: spec.rayVersion and spec.head.
// The head's agent settings (image, prompt, model) are left out: the head runs no agents.
func HeadHash(f *v1alpha1.AgentFleet) (string, error) {
	return hashJSON(struct {
		RayVersion string            `json:"rayVersion"`
		Head       v1alpha1.HeadSpec `json:"head"`
	}{f.Spec.RayVersion, f.Spec.Head})
}

// KeepTemplates makes a built RayCluster run what running runs (its rayVersion, head and agent
// worker group, with their templates, Ray labels and start parameters, and its template and head
// hashes), keeping only the built one's worker count and suspend: the layout of a change that is not
// applied to running (it needs a new RayCluster).
func KeepTemplates(built, running *rayv1.RayCluster) error {
	g := Group(running, v1alpha1.WorkerGroup)
	if g == nil || len(built.Spec.WorkerGroupSpecs) != 1 {
		return fmt.Errorf("keeping the templates of RayCluster %s: want the worker group %s in it and alone in the one built", running.Name, v1alpha1.WorkerGroup)
	}
	replicas := built.Spec.WorkerGroupSpecs[0].Replicas
	built.Spec.RayVersion = running.Spec.RayVersion
	built.Spec.HeadGroupSpec = *running.Spec.HeadGroupSpec.DeepCopy()
	kept := *g.DeepCopy()
	kept.ScaleStrategy = rayv1.ScaleStrategy{}
	kept.Replicas, kept.MinReplicas, kept.MaxReplicas = ptr.To(*replicas), ptr.To(*replicas), ptr.To(*replicas)
	built.Spec.WorkerGroupSpecs = []rayv1.WorkerGroupSpec{kept}
	hash, err := TemplateHash(&built.Spec)
	if err != nil {
		return fmt.Errorf("keeping the templates of RayCluster %s: %w", running.Name, err)
	}
	built.Annotations[v1alpha1.AnnotationTemplateHash] = hash
	if h, ok := running.Annotations[v1alpha1.AnnotationHeadHash]; ok {
		built.Annotations[v1alpha1.AnnotationHeadHash] = h
	} else {
		delete(built.Annotations, v1alpha1.AnnotationHeadHash)
	}
	return nil
}

// HeartbeatServiceAccount is the ServiceAccount the workers of a fleet with a heartbeat contract run
// as: it may keep their Leases, and do nothing else.
func HeartbeatServiceAccount(f *v1alpha1.AgentFleet) string { return f.Name + "-agent" }

// PromptHash is the hex SHA-256 of a prompt's text.
func PromptHash(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:])
}

// RayCluster builds the RayCluster of a fleet: a head that runs no agents and the worker group
// "agents" held at spec.replicas, autoscaling off.
func RayCluster(f *v1alpha1.AgentFleet, in Inputs, o Options) (*rayv1.RayCluster, error) {
	key := f.Namespace + "/" + f.Name
	promptHash := ""
	if f.Spec.Prompt != nil {
		if in.Prompt == nil {
			ref := f.Spec.Prompt.ConfigMapRef
			return nil, fmt.Errorf("building RayCluster for %s: no text for the prompt in ConfigMap %q key %q", key, ref.Name, ref.Key)
		}
		promptHash = PromptHash(*in.Prompt)
	}

	head, err := headTemplate(f, promptHash, o)
	if err != nil {
		return nil, fmt.Errorf("building RayCluster for %s: %w", key, err)
	}
	worker, err := workerTemplate(f, promptHash, o)
	if err != nil {
		return nil, fmt.Errorf("building RayCluster for %s: %w", key, err)
	}

	replicas := ptr.Deref(f.Spec.Replicas, 1)
	workerStart := map[string]string{"metrics-export-port": strconv.Itoa(int(MetricsPort))}
	if f.Spec.Worker.GPUs > 0 {
		workerStart["num-gpus"] = strconv.Itoa(int(f.Spec.Worker.GPUs))
	}
	rc := &rayv1.RayCluster{
		TypeMeta: metav1.TypeMeta{APIVersion: rayv1.GroupVersion.String(), Kind: "RayCluster"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            ClusterName(f),
			Namespace:       f.Namespace,
			Labels:          fleetLabels(f, "ray-cluster"),
			OwnerReferences: []metav1.OwnerReference{ownerRef(f)},
		},
		Spec: rayv1.RayClusterSpec{
			RayVersion: f.Spec.RayVersion,
			Suspend:    ptr.To(f.Spec.Suspend),
			HeadGroupSpec: rayv1.HeadGroupSpec{
				// The head runs no agents: num-cpus 0 keeps Ray from scheduling work on it.
				RayStartParams: map[string]string{
					"dashboard-host":      "0.0.0.0",
					"metrics-export-port": strconv.Itoa(int(MetricsPort)),
					"num-cpus":            "0",
				},
				Labels:   map[string]string{v1alpha1.LabelFleet: f.Name, v1alpha1.LabelRole: v1alpha1.RoleHead},
				Template: head,
			},
			WorkerGroupSpecs: []rayv1.WorkerGroupSpec{{
				GroupName:      v1alpha1.WorkerGroup,
				Replicas:       ptr.To(replicas),
				MinReplicas:    ptr.To(replicas),
				MaxReplicas:    ptr.To(replicas),
				NumOfHosts:     1,
				RayStartParams: workerStart,
				Labels: map[string]string{
					v1alpha1.LabelFleet:        f.Name,
					v1alpha1.LabelRole:         v1alpha1.RoleAgent,
					v1alpha1.LabelModelVersion: f.Spec.Model.Version,
				},
				Template: worker,
			}},
		},
	}
	hash, err := TemplateHash(&rc.Spec)
	if err != nil {
		return nil, fmt.Errorf("building RayCluster for %s: %w", key, err)
	}
	headHash, err := HeadHash(f)
	if err != nil {
		return nil, fmt.Errorf("building RayCluster for %s: %w", key, err)
	}
	rc.Annotations = map[string]string{v1alpha1.AnnotationTemplateHash: hash, v1alpha1.AnnotationHeadHash: headHash}
	return rc, nil
}

// TemplateHash hashes a RayCluster spec leaving out what changes without a change of template: the
// worker counts and workersToDelete (KubeRay's RayService leaves out the same) and suspend.
func TemplateHash(spec *rayv1.RayClusterSpec) (string, error) {
	s := spec.DeepCopy()
	s.Suspend = nil
	for i := range s.WorkerGroupSpecs {
		g := &s.WorkerGroupSpecs[i]
		g.Replicas, g.MinReplicas, g.MaxReplicas = nil, nil, nil
		g.ScaleStrategy.WorkersToDelete = nil
	}
	return hashJSON(s)
}

// WorkerHash is the agentfleet.dev/worker-hash label of a RayCluster's agent workers: pods with
// another value run an outdated template.
func WorkerHash(rc *rayv1.RayCluster) string {
	for _, g := range rc.Spec.WorkerGroupSpecs {
		if g.GroupName == v1alpha1.WorkerGroup {
			return g.Template.Labels[v1alpha1.LabelWorkerHash]
		}
	}
	return ""
}

func hashJSON(v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("hashing: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8]), nil
}

func ownerRef(f *v1alpha1.AgentFleet) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         v1alpha1.GroupVersion.String(),
		Kind:               v1alpha1.Kind,
		Name:               f.Name,
		UID:                f.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}

// fleetLabels are the labels of everything a fleet owns. Not app.kubernetes.io/instance: it is
// ArgoCD v2's default tracking label, so a RayCluster carrying its fleet's name there would be
// claimed, and pruned, by an ArgoCD Application of that name. The fleet is agentfleet.dev/fleet.
func fleetLabels(f *v1alpha1.AgentFleet, component string) map[string]string {
	l := map[string]string{
		v1alpha1.LabelFleet:            f.Name,
		"app.kubernetes.io/name":       "agentfleet",
		"app.kubernetes.io/component":  component,
		"app.kubernetes.io/part-of":    "agentfleet",
		"app.kubernetes.io/managed-by": "agentfleet-operator",
	}
	if f.Spec.CostCenter != "" {
		l[v1alpha1.LabelCostCenter] = f.Spec.CostCenter
	}
	return l
}

// podLabels are the labels of a fleet's head or worker pods.
func podLabels(f *v1alpha1.AgentFleet, role, promptHash string) map[string]string {
	l := fleetLabels(f, role)
	l[v1alpha1.LabelRole] = role
	l[v1alpha1.LabelModelVersion] = f.Spec.Model.Version
	if promptHash != "" {
		l[v1alpha1.LabelPromptHash] = promptHash[:16]
	}
	return l
}

func headTemplate(f *v1alpha1.AgentFleet, promptHash string, o Options) (corev1.PodTemplateSpec, error) {
	c := agentContainer(f, HeadContainer)
	c.Env = append(c.Env, o.Dashboard.env()...)
	c.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    deref(f.Spec.Head.CPU, defaultHeadCPU),
			corev1.ResourceMemory: deref(f.Spec.Head.Memory, defaultHeadMemory),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: deref(f.Spec.Head.Memory, defaultHeadMemory)},
	}
	c.Ports = []corev1.ContainerPort{
		{Name: "gcs", ContainerPort: GCSPort, Protocol: corev1.ProtocolTCP},
		{Name: "dashboard", ContainerPort: DashboardPort, Protocol: corev1.ProtocolTCP},
		{Name: "client", ContainerPort: ClientPort, Protocol: corev1.ProtocolTCP},
		{Name: "metrics", ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP},
	}
	t := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels(f, v1alpha1.RoleHead, promptHash), Annotations: promptAnnotations(promptHash)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}, Volumes: promptVolumes(f)},
	}
	return mergeOverride(t, f.Spec.Head.PodTemplate, "spec.head.podTemplate")
}

func workerTemplate(f *v1alpha1.AgentFleet, promptHash string, o Options) (corev1.PodTemplateSpec, error) {
	w := f.Spec.Worker
	c := agentContainer(f, WorkerContainer)
	if f.Spec.Health.Heartbeat != nil {
		c.Env = append(c.Env, corev1.EnvVar{Name: heartbeatapi.EnvHeartbeatInterval, Value: strconv.Itoa(int(f.Spec.Health.Heartbeat.IntervalSeconds))})
	}
	c.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    deref(w.CPU, defaultWorkerCPU),
			corev1.ResourceMemory: deref(w.Memory, defaultWorkerMemory),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: deref(w.Memory, defaultWorkerMemory)},
	}
	c.Ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP}}
	spec := corev1.PodSpec{
		Containers:         []corev1.Container{c},
		Volumes:            promptVolumes(f),
		ServiceAccountName: o.WorkerServiceAccount,
		NodeSelector:       copyMap(w.NodeSelector),
	}
	if f.Spec.Health.Heartbeat != nil {
		spec.ServiceAccountName = HeartbeatServiceAccount(f)
	}
	if w.GPUs > 0 {
		c := &spec.Containers[0]
		c.Resources.Limits[gpu.Resource] = *resource.NewQuantity(int64(w.GPUs), resource.DecimalSI)
		spec.Tolerations = append(spec.Tolerations, corev1.Toleration{Key: gpu.TaintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
		spec.Affinity = gpuAffinity(w.GPUProduct)
	}
	spec.Tolerations = append(spec.Tolerations, w.Tolerations...)
	t := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels(f, v1alpha1.RoleAgent, promptHash), Annotations: promptAnnotations(promptHash)},
		Spec:       spec,
	}
	t, err := mergeOverride(t, w.PodTemplate, "spec.worker.podTemplate")
	if err != nil {
		return t, err
	}
	hash, err := hashJSON(t)
	if err != nil {
		return t, err
	}
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	t.Labels[v1alpha1.LabelWorkerHash] = hash
	// The budget is given to new workers but is not part of the revision: a budget change rolls no
	// worker (running ones learn it from their Lease, and the operator enforces it from outside).
	for i := range t.Spec.Containers {
		if t.Spec.Containers[i].Name == WorkerContainer {
			t.Spec.Containers[i].Env = append(t.Spec.Containers[i].Env, BudgetEnv(f)...)
		}
	}
	return t, nil
}

// BudgetEnv is the per-task budget given to a fleet's workers (heartbeat.EnvMax*): the steps
// whenever the fleet has a heartbeat contract, the others when declared.
func BudgetEnv(f *v1alpha1.AgentFleet) []corev1.EnvVar {
	var env []corev1.EnvVar
	add := func(name, value string) { env = append(env, corev1.EnvVar{Name: name, Value: value}) }
	if steps := f.MaxStepsPerTask(); steps > 0 {
		add(heartbeatapi.EnvMaxStepsPerTask, strconv.Itoa(int(steps)))
	}
	if b := f.Spec.Budgets; b != nil {
		if b.MaxTokens != nil {
			add(heartbeatapi.EnvMaxTokensPerTask, strconv.FormatInt(*b.MaxTokens, 10))
		}
		if b.MaxDurationSeconds != nil {
			add(heartbeatapi.EnvMaxTaskSeconds, strconv.Itoa(int(*b.MaxDurationSeconds)))
		}
		if b.MaxCost != "" {
			add(heartbeatapi.EnvMaxTaskCost, b.MaxCost)
		}
	}
	return env
}

// gpuAffinity requires a node of the GPU product, when one is named, whose GPUs the health agent
// has not marked unhealthy (NotIn also matches nodes without the label).
func gpuAffinity(product string) *corev1.Affinity {
	exprs := []corev1.NodeSelectorRequirement{}
	if product != "" {
		exprs = append(exprs, corev1.NodeSelectorRequirement{Key: gpu.ProductLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{product}})
	}
	exprs = append(exprs, corev1.NodeSelectorRequirement{Key: gpu.HealthLabel, Operator: corev1.NodeSelectorOpNotIn, Values: []string{gpu.HealthUnhealthy}})
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: exprs}},
		},
	}}
}

// agentContainer is the container common to head and workers: image, identity, model, prompt, env.
func agentContainer(f *v1alpha1.AgentFleet, name string) corev1.Container {
	env := []corev1.EnvVar{
		{Name: heartbeatapi.EnvFleet, Value: f.Name},
		{Name: heartbeatapi.EnvNamespace, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		{Name: heartbeatapi.EnvPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: heartbeatapi.EnvModelName, Value: f.Spec.Model.Name},
		{Name: heartbeatapi.EnvModelVersion, Value: f.Spec.Model.Version},
	}
	if f.Spec.Model.Endpoint != "" {
		env = append(env, corev1.EnvVar{Name: heartbeatapi.EnvModelEndpoint, Value: f.Spec.Model.Endpoint})
	}
	var mounts []corev1.VolumeMount
	if p := f.Spec.Prompt; p != nil {
		env = append(env, corev1.EnvVar{Name: heartbeatapi.EnvPromptFile, Value: path.Join(promptMountDir, p.ConfigMapRef.Key)})
		mounts = append(mounts, corev1.VolumeMount{Name: promptVolume, MountPath: promptMountDir, ReadOnly: true})
	}
	for _, e := range f.Spec.Env {
		env = append(env, corev1.EnvVar{Name: e.Name, Value: e.Value})
	}
	for _, e := range f.Spec.SecretEnv {
		env = append(env, corev1.EnvVar{Name: e.Name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: e.SecretKeyRef.Name},
			Key:                  e.SecretKeyRef.Key,
		}}})
	}
	return corev1.Container{
		Name:            name,
		Image:           f.Spec.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Env:             env,
		VolumeMounts:    mounts,
	}
}

func promptVolumes(f *v1alpha1.AgentFleet) []corev1.Volume {
	p := f.Spec.Prompt
	if p == nil {
		return nil
	}
	return []corev1.Volume{{
		Name: promptVolume,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: p.ConfigMapRef.Name},
			Items:                []corev1.KeyToPath{{Key: p.ConfigMapRef.Key, Path: p.ConfigMapRef.Key}},
			DefaultMode:          ptr.To(int32(0o444)),
		}},
	}}
}

func promptAnnotations(promptHash string) map[string]string {
	if promptHash == "" {
		return nil
	}
	return map[string]string{v1alpha1.AnnotationPromptHash: promptHash}
}

// mergeOverride merges a fleet's partial pod template into a generated one by strategic merge,
// after decoding it strictly: an unknown or misspelt field is an error that names it.
func mergeOverride(t corev1.PodTemplateSpec, override *runtime.RawExtension, field string) (corev1.PodTemplateSpec, error) {
	if override == nil || len(override.Raw) == 0 {
		return t, nil
	}
	var probe corev1.PodTemplateSpec
	strictErrs, err := kjson.UnmarshalStrict(override.Raw, &probe)
	if err != nil {
		return t, fmt.Errorf("%s: %w", field, err)
	}
	if len(strictErrs) > 0 {
		return t, fmt.Errorf("%s: %w", field, strictErrs[0])
	}
	base, err := json.Marshal(t)
	if err != nil {
		return t, fmt.Errorf("%s: %w", field, err)
	}
	merged, err := strategicpatch.StrategicMergePatch(base, override.Raw, corev1.PodTemplateSpec{})
	if err != nil {
		return t, fmt.Errorf("%s: merging into the generated template: %w", field, err)
	}
	var out corev1.PodTemplateSpec
	if err := json.Unmarshal(merged, &out); err != nil {
		return t, fmt.Errorf("%s: %w", field, err)
	}
	return out, nil
}

func deref(q *resource.Quantity, def resource.Quantity) resource.Quantity {
	if q == nil {
		return def.DeepCopy()
	}
	return q.DeepCopy()
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// CanaryLayout lays a built RayCluster's agent workers out for a canary rollout (the controller's
// plan): the stable group ("agents") is stable (the group as the RayCluster has it: the template it
// runs, its Ray labels and start parameters; nil: the one built) at stableReplicas, and, with canary,
// the group "agents-canary" runs the group built at canaryReplicas. The template hash annotation is
// computed again.
func CanaryLayout(rc *rayv1.RayCluster, stable *rayv1.WorkerGroupSpec, stableReplicas int32, canary bool, canaryReplicas int32) error {
	if len(rc.Spec.WorkerGroupSpecs) != 1 || rc.Spec.WorkerGroupSpecs[0].GroupName != v1alpha1.WorkerGroup {
		return fmt.Errorf("laying out the canary of RayCluster %s: want the one worker group %s built", rc.Name, v1alpha1.WorkerGroup)
	}
	built := rc.Spec.WorkerGroupSpecs[0]
	g := &rc.Spec.WorkerGroupSpecs[0]
	if stable != nil {
		*g = *stable.DeepCopy()
		g.ScaleStrategy = rayv1.ScaleStrategy{}
	}
	g.Replicas, g.MinReplicas, g.MaxReplicas = ptr.To(stableReplicas), ptr.To(stableReplicas), ptr.To(stableReplicas)
	if canary {
		c := *built.DeepCopy()
		c.GroupName = CanaryGroupName
		c.Replicas, c.MinReplicas, c.MaxReplicas = ptr.To(canaryReplicas), ptr.To(canaryReplicas), ptr.To(canaryReplicas)
		rc.Spec.WorkerGroupSpecs = append(rc.Spec.WorkerGroupSpecs, c)
	}
	hash, err := TemplateHash(&rc.Spec)
	if err != nil {
		return fmt.Errorf("laying out the canary of RayCluster %s: %w", rc.Name, err)
	}
	rc.Annotations[v1alpha1.AnnotationTemplateHash] = hash
	return nil
}

// CanaryGroupName is the worker group of a canary's workers.
const CanaryGroupName = v1alpha1.CanaryGroup

// Group is a RayCluster's worker group, nil without it.
func Group(rc *rayv1.RayCluster, group string) *rayv1.WorkerGroupSpec {
	for i := range rc.Spec.WorkerGroupSpecs {
		if rc.Spec.WorkerGroupSpecs[i].GroupName == group {
			return &rc.Spec.WorkerGroupSpecs[i]
		}
	}
	return nil
}

// GroupTemplate is the template of a RayCluster's worker group, nil without the group.
func GroupTemplate(rc *rayv1.RayCluster, group string) *corev1.PodTemplateSpec {
	for i := range rc.Spec.WorkerGroupSpecs {
		if rc.Spec.WorkerGroupSpecs[i].GroupName == group {
			return &rc.Spec.WorkerGroupSpecs[i].Template
		}
	}
	return nil
}

// GroupHash is the worker hash of a RayCluster's worker group's template ("" without the group).
func GroupHash(rc *rayv1.RayCluster, group string) string {
	if t := GroupTemplate(rc, group); t != nil {
		return t.Labels[v1alpha1.LabelWorkerHash]
	}
	return ""
}
