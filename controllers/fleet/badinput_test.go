package fleet_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// Bad input (issue 14): each input at or past its limit either works whole or is refused with a
// message that names what is wrong, before anything is created; nothing is refused by the API
// server half-way through a reconcile.

// refused asserts that the API server refused to create obj, with a message containing each of
// msgs, and that nothing of that name was stored.
func (e *env) refused(obj client.Object, msgs ...string) {
	e.t.Helper()
	err := k8s.Create(e.ctx, obj)
	if err == nil {
		e.t.Fatalf("%T %s (%d characters) was accepted, want it refused with %q", obj, obj.GetName(), len(obj.GetName()), msgs)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			e.t.Errorf("creating %T %s: %v\nwant a message containing %q", obj, obj.GetName(), err, m)
		}
	}
	stored := obj.DeepCopyObject().(client.Object)
	if err := k8s.Get(e.ctx, client.ObjectKeyFromObject(obj), stored); !apierrors.IsNotFound(err) {
		e.t.Errorf("%T %s: err = %v after a refused create, want NotFound", obj, obj.GetName(), err)
	}
}

// runningFleet makes the fleet's RayCluster, n Ready workers on its template (with their heartbeat
// Leases, idle, if the fleet has heartbeats) and a ready head, as KubeRay, the kubelets and the
// agents would, and returns the worker names once the fleet is Ready.
func (e *env) runningFleet(name string, n int) []string {
	e.t.Helper()
	e.reconcile(name)
	rc := e.rayCluster(name)
	workers := e.workers(rc, n, rayspecs.WorkerHash(rc), true)
	if e.get(name).Spec.Health.Heartbeat != nil {
		for _, w := range workers {
			e.report(name, w, tokens(0, 0))
		}
	}
	e.headReady(rc)
	e.reconcile(name)
	e.condition(name, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, fmt.Sprintf("%d of %d agent workers ready", n, n))
	return workers
}

// untouched asserts that the fleet's RayCluster is as it was (same resourceVersion: not written),
// with nothing handed to KubeRay for deletion, and that every worker still exists.
func (e *env) untouched(before *rayv1.RayCluster, workers []string) {
	e.t.Helper()
	rc := e.rayCluster(before.Name)
	if rc.ResourceVersion != before.ResourceVersion {
		e.t.Errorf("RayCluster %s written (resourceVersion %s -> %s): a running fleet must be left as it is", rc.Name, before.ResourceVersion, rc.ResourceVersion)
	}
	for _, g := range rc.Spec.WorkerGroupSpecs {
		if len(g.ScaleStrategy.WorkersToDelete) > 0 {
			e.t.Errorf("workersToDelete %v of group %s: no worker may be replaced", g.ScaleStrategy.WorkersToDelete, g.GroupName)
		}
	}
	for _, w := range workers {
		if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: w}, &corev1.Pod{}); err != nil {
			e.t.Errorf("worker %s: %v", w, err)
		}
	}
}

// workersStatus asserts the worker counts and the revision the status reports.
func (e *env) workersStatus(name string, ready, declared int32, revision, promptHash string) {
	e.t.Helper()
	st := e.get(name).Status
	type counts struct {
		Replicas, Ready, Updated           int32
		Workers, Cluster, Revision, Prompt string
	}
	want := counts{ready, ready, ready, fmt.Sprintf("%d/%d", ready, declared), name, revision, promptHash}
	got := counts{st.Replicas, st.ReadyReplicas, st.UpdatedReplicas, st.Workers, st.RayClusterName, st.Revision, st.PromptHash}
	if diff := cmp.Diff(want, got); diff != "" {
		e.t.Errorf("status of %s while its workers run (-want +got):\n%s", name, diff)
	}
}

func TestBadInputTenThousandReplicas(t *testing.T) {
	e := newEnv(t)
	// One past the CRD's maximum is refused before it is stored.
	e.refused(e.fleet("over").Replicas(10001).Obj(), "spec.replicas", "10000")

	// The maximum, with the most GPUs a worker may ask for: 160,000 GPUs, one RayCluster.
	e.apply(e.fleet("agents").Replicas(10000).GPUs(16, "NVIDIA-H100-80GB-HBM3").Obj())
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	w := rc.Spec.WorkerGroupSpecs[0]
	if got := [3]int32{*w.Replicas, *w.MinReplicas, *w.MaxReplicas}; got != [3]int32{10000, 10000, 10000} {
		t.Errorf("replicas/min/max %v, want 10000 each", got)
	}
	if got := w.Template.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]; got.Value() != 16 {
		t.Errorf("worker GPU limit %s, want 16", got.String())
	}
	if err := rayutils.ValidateRayClusterSpec(&rc.Spec, rc.Annotations); err != nil {
		t.Errorf("KubeRay would refuse the RayCluster: %v", err)
	}
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonScaling, "0 of 10000 agent workers ready")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	if st := e.get("agents").Status; st.GPUs.Requested != 160000 || st.Workers != "0/10000" {
		t.Errorf("status gpus.requested %d, workers %q, want 160000 and 0/10000", st.GPUs.Requested, st.Workers)
	}
	// Half of them come up: counted as such, nothing replaced, the rest still awaited.
	e.workers(rc, 50, rayspecs.WorkerHash(rc), true)
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonScaling, "50 of 10000 agent workers ready")
	if del := e.rayCluster("agents").Spec.WorkerGroupSpecs[0].ScaleStrategy.WorkersToDelete; len(del) > 0 {
		t.Errorf("workersToDelete %v while scaling up", del)
	}

	// A namespace capped below that: the fleet is held whole, with the figures, before any RayCluster.
	capped := newEnv(t)
	ns := &corev1.Namespace{}
	if err := k8s.Get(capped.ctx, client.ObjectKey{Name: capped.ns}, ns); err != nil {
		t.Fatal(err)
	}
	ns.Annotations = map[string]string{v1alpha1.AnnotationMaxGPUs: "1000"}
	if err := k8s.Update(capped.ctx, ns); err != nil {
		t.Fatal(err)
	}
	capped.apply(capped.fleet("agents").Replicas(10000).GPUs(1, "").Obj())
	capped.reconcile("agents")
	capped.noRayCluster("agents")
	capped.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonGPUNotAllowed,
		"allows at most 1000 GPUs per fleet (annotation agentfleet.dev/max-gpus) and this fleet asks for 10000")
	capped.condition("agents", v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonGPUNotAllowed, "")
}

// The API server's limit on a ConfigMap's data, all keys together (core.MaxSecretSize).
const maxConfigMapData = 1 << 20

func TestBadInputOneMiBPrompt(t *testing.T) {
	e := newEnv(t)
	// A prompt over the limit cannot even be stored: the fleet waits for it, saying which.
	e.refused(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prompts", Namespace: e.ns}, Data: map[string]string{"system.md": strings.Repeat("p", maxConfigMapData+1)}},
		fmt.Sprint(maxConfigMapData))
	e.apply(e.fleet("agents").Replicas(2).Prompt("prompts", "system.md").Obj())
	e.reconcile("agents")
	e.noRayCluster("agents")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonPromptNotFound, "prompt ConfigMap "+e.ns+"/prompts not found")

	// The largest prompt a ConfigMap holds: the RayCluster carries its hash and mounts the
	// ConfigMap; the text itself is in no object the operator writes.
	var b strings.Builder
	for i := 0; b.Len() < maxConfigMapData; i++ {
		fmt.Fprintf(&b, "Rule %d: be helpful.\n", i)
	}
	prompt := b.String()[:maxConfigMapData]
	e.apply(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prompts", Namespace: e.ns}, Data: map[string]string{"system.md": prompt}})
	e.reconcile("agents")
	rc := e.rayCluster("agents")
	for _, tmpl := range []corev1.PodTemplateSpec{rc.Spec.HeadGroupSpec.Template, rc.Spec.WorkerGroupSpecs[0].Template} {
		if got := tmpl.Annotations[v1alpha1.AnnotationPromptHash]; got != rayspecs.PromptHash(prompt) {
			t.Errorf("prompt hash %q, want %q", got, rayspecs.PromptHash(prompt))
		}
		var mounted bool
		for _, v := range tmpl.Spec.Volumes {
			mounted = mounted || (v.ConfigMap != nil && v.ConfigMap.Name == "prompts")
		}
		if !mounted {
			t.Errorf("the prompt ConfigMap is not mounted: volumes %+v", tmpl.Spec.Volumes)
		}
	}
	data, err := json.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 64<<10 || strings.Contains(string(data), "Rule 1: be helpful.") {
		t.Errorf("the RayCluster is %d bytes: the prompt's text must not be copied into it", len(data))
	}
	if f := e.get("agents"); strings.Contains(fmt.Sprint(f.Status), "Rule 1: be helpful.") {
		t.Error("the prompt's text is in the fleet's status")
	}
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "")
	e.condition("agents", v1alpha1.ConditionProgressing, metav1.ConditionTrue, v1alpha1.ReasonScaling, "0 of 2 agent workers ready")
}

// jobNamed is a job whose name is n characters long (30 is the CRD's limit), numbered i.
func jobNamed(n, i int) v1alpha1.JobSpec {
	suffix := fmt.Sprintf("-%03d", i)
	return v1alpha1.JobSpec{Name: strings.Repeat("j", n-len(suffix)) + suffix, Entrypoint: "python run.py"}
}

func TestBadInputFiveHundredJobs(t *testing.T) {
	e := newEnv(t)
	many := make([]v1alpha1.JobSpec, 500)
	for i := range many {
		many[i] = jobNamed(30, i)
	}
	e.refused(e.fleet("many").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Jobs = many }).Obj(), "spec.jobs", "must have at most 32 items")

	// Within every field's limit, but more than etcd stores in one object (1.5 MiB): refused whole.
	huge := make([]v1alpha1.JobSpec, 32)
	for i := range huge {
		huge[i] = jobNamed(30, i)
		huge[i].RuntimeEnvYAML = "env_vars:\n  CONTEXT: " + strings.Repeat("c", 60<<10) + "\n"
	}
	e.refused(e.fleet("huge").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Jobs = huge }).Obj(), "too large")

	// The CRD's maximum, 32 jobs with the longest names: 32 RayJobs in one reconcile, each named
	// within KubeRay's limit, none twice.
	e.apply(e.fleet("agents").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Jobs = many[:32] }).Obj())
	e.reconcile("agents")
	e.headReady(e.rayCluster("agents"))
	e.reconcile("agents")
	e.reconcile("agents")
	jobs := e.rayJobs()
	seen := map[string]bool{}
	for _, j := range jobs {
		if err := rayutils.ValidateRayJobMetadata(j.ObjectMeta); err != nil {
			t.Errorf("KubeRay would refuse RayJob %s: %v", j.Name, err)
		}
		seen[j.Labels[v1alpha1.LabelJob]] = true
	}
	if len(jobs) != 32 || len(seen) != 32 {
		t.Fatalf("%d RayJobs for %d jobs, want one for each of the 32", len(jobs), len(seen))
	}
	st := e.get("agents").Status.Jobs
	if len(st) != 32 || st[0].Name != many[0].Name || st[31].Name != many[31].Name || st[31].RayJobName == "" {
		t.Errorf("status.jobs has %d entries (%+v ...), want the 32 in declared order", len(st), st[:min(len(st), 2)])
	}
}

// A failed Ray job's message carries up to 20,000 characters of its logs ("last available logs
// (truncated to 20,000 chars)"). Copied whole into status.jobs for the CRD's 32 jobs, with a spec
// the CRD admits, the fleet would pass etcd's limit on an object (1.5 MiB): every status write
// would then be refused while its RayCluster and RayJobs run, and the fleet would report nothing.
func TestBadInputJobMessagesKeepTheStatusWritable(t *testing.T) {
	e := newEnv(t)
	jobs := make([]v1alpha1.JobSpec, 32)
	for i := range jobs {
		jobs[i] = jobNamed(30, i)
		// 28 KiB of runtime environment each: within the CRD's 64 KiB, under 1 MiB in all.
		jobs[i].RuntimeEnvYAML = "env_vars:\n  CONTEXT: " + strings.Repeat("c", 28<<10) + "\n"
	}
	e.apply(e.fleet("agents").Mutate(func(f *v1alpha1.AgentFleet) { f.Spec.Jobs = jobs }).Obj())
	e.reconcile("agents")
	e.headReady(e.rayCluster("agents"))
	e.reconcile("agents")
	rayJobs := e.rayJobs()
	if len(rayJobs) != 32 {
		t.Fatalf("%d RayJobs, want 32", len(rayJobs))
	}
	logs := "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n" + strings.Repeat("Traceback line\n", 20000/15)
	for i := range rayJobs {
		rayJobs[i].Status.JobStatus, rayJobs[i].Status.JobDeploymentStatus = rayv1.JobStatusFailed, rayv1.JobDeploymentStatusComplete
		rayJobs[i].Status.Message = logs
		if err := k8s.Status().Update(e.ctx, &rayJobs[i]); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKey{Namespace: e.ns, Name: "agents"}})
	if err != nil {
		t.Fatalf("reconcile: %v (result %+v): the fleet's status cannot be written", err, res)
	}
	for _, j := range e.get("agents").Status.Jobs {
		if j.JobStatus != string(rayv1.JobStatusFailed) {
			t.Errorf("job %s: jobStatus %q, want FAILED", j.Name, j.JobStatus)
		}
		if len(j.Message) > 1024+len("…") || !strings.HasPrefix(logs, strings.TrimSuffix(j.Message, "…")) {
			t.Errorf("job %s: message of %d bytes, want KubeRay's message cut to at most 1024", j.Name, len(j.Message))
		}
	}
}

func TestBadInputNamesAtTheLimit(t *testing.T) {
	e := newEnv(t)
	long := func(n int) string { return "research-agents-" + strings.Repeat("x", n-len("research-agents-")) }
	for _, n := range []int{54, 63} {
		e.refused(e.fleet(long(n)).Obj(), "at most 53 characters")
	}
	e.refused(e.fleet("agents").Job(jobNamed(31, 0)).Obj(), "spec.jobs[0].name")
	// A blue-green preview is named <fleet>-bg, the fleet's name cut to KubeRay's 53 characters: two
	// fleets whose names differ only past that cut must not take each other's preview.
	a, b := e.fleet(long(53)[:50]+"aaa").Obj(), e.fleet(long(53)[:50]+"bbb").Obj()
	if pa, pb := rayspecs.PreviewClusterName(a, a.Name), rayspecs.PreviewClusterName(b, b.Name); pa == pb {
		t.Errorf("fleets %s and %s both name their blue-green preview RayCluster %s", a.Name, b.Name, pa)
	}

	// The longest name the CRD admits, with heartbeats, the longest job names and cost center: every
	// derived name and label is valid, so that neither the API server nor KubeRay refuses any of
	// what the fleet makes, or what KubeRay makes for it.
	name := long(53)
	once, hourly := jobNamed(30, 0), jobNamed(30, 1)
	hourly.Schedule = "@hourly"
	e.apply(e.fleet(name).Replicas(1).Heartbeat(10, 600, 20, 500).Job(once).Job(hourly).CostCenter(strings.Repeat("c", 63)).Obj())
	e.clockFrom(name)
	e.reconcile(name)
	rc := e.rayCluster(name)
	if err := rayutils.ValidateRayClusterMetadata(rc.ObjectMeta); err != nil {
		t.Errorf("KubeRay would refuse RayCluster %s: %v", rc.Name, err)
	}
	if err := rayutils.ValidateRayClusterSpec(&rc.Spec, rc.Annotations); err != nil {
		t.Errorf("KubeRay would refuse the spec of RayCluster %s: %v", rc.Name, err)
	}
	// The heartbeat access: created, so the API server found the names valid.
	access := rayspecs.HeartbeatServiceAccount(e.get(name))
	for _, o := range []client.Object{&corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}} {
		if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: access}, o); err != nil {
			t.Errorf("%T %s: %v", o, access, err)
		}
	}
	// The Services KubeRay names after the cluster.
	head, err := rayutils.GenerateHeadServiceName(rayutils.RayClusterCRD, rc.Spec, rc.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{head, rayutils.GenerateServeServiceName(rc.Name)} {
		if errs := validation.IsDNS1035Label(svc); len(errs) > 0 {
			t.Errorf("Service %s: %v", svc, errs)
		}
	}
	// Every label value of the cluster and its templates.
	labels := []map[string]string{rc.Labels, rc.Spec.HeadGroupSpec.Labels, rc.Spec.HeadGroupSpec.Template.Labels}
	for _, g := range rc.Spec.WorkerGroupSpecs {
		labels = append(labels, g.Labels, g.Template.Labels)
	}
	for _, l := range labels {
		for k, v := range l {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("label %s=%s: %v", k, v, errs)
			}
		}
	}
	// The pods as KubeRay names and makes them from the templates, and a worker's Lease, named after
	// its pod: the API server accepts each.
	pods := []*corev1.Pod{
		kubeRayPod(rc, rc.Spec.HeadGroupSpec.Template, rayutils.PodName(rc.Name, rayv1.HeadNode, true)+"h0st1", "headgroup", rayv1.HeadNode),
		kubeRayPod(rc, rc.Spec.WorkerGroupSpecs[0].Template, rayutils.PodName(rc.Name+"-"+v1alpha1.WorkerGroup, rayv1.WorkerNode, true)+"w0rk1", v1alpha1.WorkerGroup, rayv1.WorkerNode),
	}
	e.apply(pods[0], pods[1])
	e.lease(name, pods[1].Name, e.clock.Now())
	if pods[1].Spec.ServiceAccountName != access {
		t.Errorf("workers run as %q, want the heartbeat ServiceAccount %s", pods[1].Spec.ServiceAccountName, access)
	}

	e.headReady(rc)
	e.reconcile(name)
	// The hourly job's first run, at the next full hour after the fleet was made: its name has the
	// run's suffix too.
	next := e.clock.Now().Truncate(time.Hour).Add(time.Hour)
	e.clock.SetTime(next.Add(time.Second))
	e.reconcile(name)
	jobs := e.rayJobs()
	if len(jobs) != 2 {
		t.Fatalf("RayJobs %v, want the one-off and the hourly run of %s", names(jobs), next)
	}
	for _, j := range jobs {
		if err := rayutils.ValidateRayJobMetadata(j.ObjectMeta); err != nil {
			t.Errorf("KubeRay would refuse RayJob %s: %v", j.Name, err)
		}
		for k, v := range j.Labels {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("RayJob %s label %s=%s: %v", j.Name, k, v, errs)
			}
		}
	}
	f := e.get(name)
	if f.Status.RayClusterName != name || f.Status.DashboardURL != "http://"+head+"."+e.ns+".svc:8265" {
		t.Errorf("status rayClusterName %q, dashboardURL %q", f.Status.RayClusterName, f.Status.DashboardURL)
	}
	if c := meta.FindStatusCondition(f.Status.Conditions, v1alpha1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Degraded %+v, want False", c)
	}
}

// kubeRayPod is a pod of the cluster as KubeRay makes it from a group's template: its name, the
// template's metadata and spec, KubeRay's labels.
func kubeRayPod(rc *rayv1.RayCluster, tmpl corev1.PodTemplateSpec, name, group string, nodeType rayv1.RayNodeType) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
	p.Name, p.Namespace = name, rc.Namespace
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	p.Labels[rayutils.RayClusterLabelKey] = rc.Name
	p.Labels[rayutils.RayNodeGroupLabelKey] = group
	p.Labels[rayutils.RayNodeTypeLabelKey] = string(nodeType)
	p.Labels[rayutils.RayIDLabelKey] = rayutils.CheckLabel(rayutils.GenerateIdentifier(rc.Name, nodeType))
	return p
}

func TestBadInputPromptDeletedUnderARunningFleet(t *testing.T) {
	e := newEnv(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prompts", Namespace: e.ns}, Data: map[string]string{"system.md": "You are helpful."}}
	e.apply(cm)
	e.apply(e.fleet("agents").Replicas(2).Prompt("prompts", "system.md").Obj())
	workers := e.runningFleet("agents", 2)
	before := e.rayCluster("agents")
	revision := rayspecs.WorkerHash(before)

	if err := k8s.Delete(e.ctx, cm); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	e.untouched(before, workers)
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonPromptNotFound, "prompt ConfigMap "+e.ns+"/prompts not found")
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonPromptNotFound, "the running workers keep theirs")
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonPromptNotFound, "")
	// The status still reports the workers that run, and what they run.
	e.workersStatus("agents", 2, 2, revision, rayspecs.PromptHash("You are helpful."))

	// The same prompt back: Ready again, no roll.
	cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "prompts", Namespace: e.ns}, Data: map[string]string{"system.md": "You are helpful."}}
	e.apply(cm)
	e.reconcile("agents")
	e.untouched(before, workers)
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2 agent workers ready")
	if c := meta.FindStatusCondition(e.get("agents").Status.Conditions, v1alpha1.ConditionStalled); c != nil {
		t.Errorf("still Stalled after the prompt came back: %+v", c)
	}
}

func TestBadInputSecretKeyDisappears(t *testing.T) {
	e := newEnv(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "llm-keys", Namespace: e.ns}, Data: map[string][]byte{"anthropic": []byte("key-value-1")}}
	e.apply(secret)
	e.apply(e.fleet("agents").Replicas(2).SecretEnv("ANTHROPIC_API_KEY", "llm-keys", "anthropic").Obj())
	workers := e.runningFleet("agents", 2)
	before := e.rayCluster("agents")
	revision := rayspecs.WorkerHash(before)

	// The key is renamed in the Secret: a worker started now would fail with
	// CreateContainerConfigError; those running keep the value they started with.
	secret.Data = map[string][]byte{"claude": []byte("key-value-2")}
	if err := k8s.Update(e.ctx, secret); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	e.untouched(before, workers)
	e.condition("agents", v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonSecretNotFound,
		`Secret llm-keys in `+e.ns+` has no key "anthropic" (spec.secretEnv ANTHROPIC_API_KEY)`)
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound, "")
	if c := meta.FindStatusCondition(e.get("agents").Status.Conditions, v1alpha1.ConditionDegraded); c != nil && strings.Contains(c.Message, "key-value") {
		t.Errorf("the condition shows a Secret's value: %q", c.Message)
	}
	e.workersStatus("agents", 2, 2, revision, "")

	secret.Data["anthropic"] = []byte("key-value-3")
	if err := k8s.Update(e.ctx, secret); err != nil {
		t.Fatal(err)
	}
	e.reconcile("agents")
	e.untouched(before, workers)
	e.condition("agents", v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonReady, "2 of 2 agent workers ready")
}

// The agents of every fleet in a namespace may write Leases there (their Role cannot say which), so
// a Lease labelled as this fleet by another fleet's agent, or named like a worker of this fleet that
// does not exist, must change nothing of this fleet: no replacement, no usage, no budget, no status.
func TestBadInputLeaseOfAnotherFleet(t *testing.T) {
	e := newEnv(t)
	e.apply(e.fleet("agents").Replicas(1).Heartbeat(10, 600, 20, 500).Mutate(func(f *v1alpha1.AgentFleet) {
		f.Spec.Budgets = &v1alpha1.BudgetsSpec{MaxTokensPerHour: ptr.To[int64](1000), MaxTokens: ptr.To[int64](1000), OnExceeded: v1alpha1.BudgetPause}
	}).Obj())
	e.apply(e.fleet("other").Replicas(1).Heartbeat(10, 600, 20, 500).Obj())
	e.clockFrom("agents")
	mine := e.runningFleet("agents", 1)[0]
	theirs := e.runningFleet("other", 1)[0]
	e.report("agents", mine, tokens(100, 10))
	e.reconcile("agents")
	before := e.get("agents").Status
	rcBefore := e.rayCluster("agents")

	// Looping, over the task's budget and over the fleet's hourly budget, all at once.
	forged := func() map[string]string {
		a := tokens(50000, 50000)
		a[heartbeatapi.AnnotationState], a[heartbeatapi.AnnotationTaskTokens] = heartbeatapi.StateWorking, "100000"
		a[heartbeatapi.AnnotationActionRepeats], a[heartbeatapi.AnnotationTaskSteps] = "1000", "100000"
		a[heartbeatapi.AnnotationTasksSucceeded], a[heartbeatapi.AnnotationTasksFailed] = "7", "9"
		a[heartbeatapi.AnnotationLastStepTime] = e.clock.Now().Format(heartbeatapi.TimeFormat)
		return a
	}
	// The other fleet's agent labels its own Lease as this fleet's (a wrong AGENTFLEET_FLEET), and
	// writes one named like a worker of this fleet that does not exist.
	e.forgeLease("agents", theirs, forged())
	e.forgeLease("agents", "agents-agents-worker-f0rgd", forged())
	e.clock.Step(time.Second)
	e.forgeLease("agents", theirs, forged())
	e.forgeLease("agents", "agents-agents-worker-f0rgd", forged())
	e.reconcile("agents")

	e.untouched(rcBefore, []string{mine})
	if diff := cmp.Diff(before, e.get("agents").Status); diff != "" {
		t.Errorf("another fleet's Leases changed this fleet's status (-before +after):\n%s", diff)
	}
	if a := e.leaseAnnotations(mine); a[heartbeatapi.AnnotationPaused] != "" {
		t.Errorf("this fleet's worker was paused: %v", a)
	}
	if got := tokensCounted(t, e.ns, "agents"); got != 110 {
		t.Errorf("agentfleet_tokens_total of the fleet = %v, want 110: its own worker's only", got)
	}
	if got := tokensCounted(t, e.ns, "other"); got != 0 {
		t.Errorf("agentfleet_tokens_total of the other fleet = %v: a Lease labelled as another fleet counts for none", got)
	}

	// Its own worker passing the hourly budget does pause it: the Leases above were ignored, not
	// the accounting.
	e.report("agents", mine, tokens(1000, 10))
	e.reconcile("agents")
	e.condition("agents", v1alpha1.ConditionBudgetExceeded, metav1.ConditionTrue, v1alpha1.ReasonBudgetExceeded, "maxTokensPerHour (1000)")
}

// forgeLease writes the Lease name labelled as fleet with annotations, renewed now, whatever it was
// labelled before, and gives the event to the usage ledger as the leader's informer would.
func (e *env) forgeLease(fleet, name string, annotations map[string]string) {
	e.t.Helper()
	now := metav1.NewMicroTime(e.clock.Now())
	l := &coordinationv1.Lease{}
	var old *coordinationv1.Lease
	if err := k8s.Get(e.ctx, client.ObjectKey{Namespace: e.ns, Name: name}, l); err == nil {
		old = l.DeepCopy()
		l.Labels, l.Annotations, l.Spec.RenewTime = map[string]string{v1alpha1.LabelFleet: fleet}, annotations, &now
		if err := k8s.Update(e.ctx, l); err != nil {
			e.t.Fatal(err)
		}
	} else {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns, Labels: map[string]string{v1alpha1.LabelFleet: fleet}, Annotations: annotations},
			Spec:       coordinationv1.LeaseSpec{RenewTime: &now},
		}
		e.apply(l)
	}
	e.r.AccountLease(e.ctx, old, l, false)
}

// tokensCounted is agentfleet_tokens_total of a fleet, both directions, any model.
func tokensCounted(t *testing.T, ns, fleet string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range families {
		if mf.GetName() != "agentfleet_tokens_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelOf(m, "namespace") == ns && labelOf(m, "fleet") == fleet {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
