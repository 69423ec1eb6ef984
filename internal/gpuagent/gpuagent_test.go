package gpuagent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/gpu"
	"github.com/agentfleet/agentfleet/gpu/agent"
)

// manifests decodes every document of config/gpu-agent, strictly, into its typed object by kind.
func manifests(t *testing.T) map[string]any {
	t.Helper()
	files, err := filepath.Glob("../../config/gpu-agent/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in config/gpu-agent: %v", err)
	}
	objs := map[string]any{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue // kustomize's, not an object
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for doc := range strings.SplitSeq(string(data), "\n---\n") {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var obj any
			switch tm.Kind {
			case "ServiceAccount":
				obj = &corev1.ServiceAccount{}
			case "ClusterRole":
				obj = &rbacv1.ClusterRole{}
			case "ClusterRoleBinding":
				obj = &rbacv1.ClusterRoleBinding{}
			case "DaemonSet":
				obj = &appsv1.DaemonSet{}
			case "ValidatingAdmissionPolicy":
				obj = &admissionregistrationv1.ValidatingAdmissionPolicy{}
			case "ValidatingAdmissionPolicyBinding":
				obj = &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
			default:
				t.Fatalf("%s: unexpected kind %q", f, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s: %s: %v", f, tm.Kind, err)
			}
			if _, dup := objs[tm.Kind]; dup {
				t.Fatalf("two %ss", tm.Kind)
			}
			objs[tm.Kind] = obj
		}
	}
	return objs
}

func TestManifests(t *testing.T) {
	objs := manifests(t)
	role, _ := objs["ClusterRole"].(*rbacv1.ClusterRole)
	binding, _ := objs["ClusterRoleBinding"].(*rbacv1.ClusterRoleBinding)
	sa, _ := objs["ServiceAccount"].(*corev1.ServiceAccount)
	ds, _ := objs["DaemonSet"].(*appsv1.DaemonSet)
	if role == nil || binding == nil || sa == nil || ds == nil {
		t.Fatalf("want a ClusterRole, ClusterRoleBinding, ServiceAccount and DaemonSet, got %v", objs)
	}

	// Least privilege: exactly what the Publisher and the pod cache use.
	wantRules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"patch"}},
	}
	if diff := cmp.Diff(wantRules, role.Rules); diff != "" {
		t.Errorf("ClusterRole rules (-want +got):\n%s", diff)
	}
	wantBinding := rbacv1.ClusterRoleBinding{
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}},
	}
	if diff := cmp.Diff(wantBinding.RoleRef, binding.RoleRef); diff != "" {
		t.Errorf("ClusterRoleBinding roleRef (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantBinding.Subjects, binding.Subjects); diff != "" {
		t.Errorf("ClusterRoleBinding subjects (-want +got):\n%s", diff)
	}

	spec := ds.Spec.Template.Spec
	if spec.ServiceAccountName != sa.Name || ds.Namespace != sa.Namespace {
		t.Errorf("DaemonSet runs as %s/%s, want the ServiceAccount %s/%s", ds.Namespace, spec.ServiceAccountName, sa.Namespace, sa.Name)
	}
	if diff := cmp.Diff(map[string]string{gpu.PresentLabel: "true"}, spec.NodeSelector); diff != "" {
		t.Errorf("nodeSelector (-want +got):\n%s", diff)
	}
	if !tolerates(spec.Tolerations, corev1.Taint{Key: gpu.TaintKey, Value: "present", Effect: corev1.TaintEffectNoSchedule}) {
		t.Errorf("tolerations %v do not tolerate the %s taint", spec.Tolerations, gpu.TaintKey)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME = %+v, want it from spec.nodeName", e)
	}
	if env["NVIDIA_VISIBLE_DEVICES"].Value != "all" || env["NVIDIA_DRIVER_CAPABILITIES"].Value != "utility" {
		t.Errorf("NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES = %q, %q; want all, utility",
			env["NVIDIA_VISIBLE_DEVICES"].Value, env["NVIDIA_DRIVER_CAPABILITIES"].Value)
	}

	// The args parse with the binary's flags, and mean what the agent's defaults mean.
	var o options
	fs := newFlags(&o, func(k string) string { return map[string]string{"NODE_NAME": "gpu-node-1"}[k] })
	if err := fs.Parse(c.Args); err != nil {
		t.Fatalf("args %q: %v", c.Args, err)
	}
	if _, err := o.validate(); err != nil {
		t.Fatalf("args %q: %v", c.Args, err)
	}
	if o.ignoredXIDs != gpu.DefaultIgnoredXIDList || o.pollInterval != 10*time.Second || o.nodeName != "gpu-node-1" {
		t.Errorf("flags = %+v, want the default XIDs, 10s and the node from NODE_NAME", o)
	}

	// The socket the agent dials is in the read-only hostPath mount of the kubelet's directory.
	var mount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if strings.HasPrefix(o.podResourcesSocket, m.MountPath+"/") {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || !mount.ReadOnly {
		t.Fatalf("no read-only mount holds %s: %+v", o.podResourcesSocket, c.VolumeMounts)
	}
	if o.podResourcesSocket != agent.DefaultPodResourcesSocket {
		t.Errorf("--pod-resources-socket = %s, want the kubelet's %s", o.podResourcesSocket, agent.DefaultPodResourcesSocket)
	}
	var hostPath string
	for _, v := range spec.Volumes {
		if v.Name == mount.Name && v.HostPath != nil {
			hostPath = v.HostPath.Path
		}
	}
	if hostPath != "/var/lib/kubelet/pod-resources" || mount.MountPath != hostPath {
		t.Errorf("volume %s is hostPath %q mounted at %s, want /var/lib/kubelet/pod-resources at the same path", mount.Name, hostPath, mount.MountPath)
	}
	if !strings.HasSuffix(o.metricsAddr, ":9400") || len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9400 {
		t.Errorf("metrics on %s, ports %+v: want 9400 on both", o.metricsAddr, c.Ports)
	}
}

func tolerates(tols []corev1.Toleration, taint corev1.Taint) bool {
	for _, t := range tols {
		if t.ToleratesTaint(klog.Background(), &taint, false) {
			return true
		}
	}
	return false
}

func TestRunFlags(t *testing.T) {
	env := func(string) string { return "" }
	for name, tc := range map[string]struct {
		args []string
		code int
		says string
	}{
		// Without a driver NVML does not start; with one (a GPU machine), there is no cluster here.
		"no driver or no cluster": {args: []string{"--node-name=n", "--metrics-bind-address=0"}, code: 1, says: "GPU agent stopped"},
		"help":                    {args: []string{"--help"}, code: 0, says: "-ignored-xids"},
		"no node name":            {args: []string{}, code: 2, says: "--node-name is required"},
		"bad xid list":            {args: []string{"--node-name=n", "--ignored-xids=13,x"}, code: 2, says: "--ignored-xids"},
		"zero interval":           {args: []string{"--node-name=n", "--poll-interval=0s"}, code: 2, says: "--poll-interval must be positive"},
		"unknown flag":            {args: []string{"--nope"}, code: 2, says: "flag provided but not defined"},
		"negative quiet":          {args: []string{"--node-name=n", "--quiet-period=-1s"}, code: 2, says: "--quiet-period"},
		"zero re-probe back-off":  {args: []string{"--node-name=n", "--reprobe-backoff=0s"}, code: 2, says: "--reprobe-backoff must be positive"},
		"absurd temperature":      {args: []string{"--node-name=n", "--max-temperature=5000"}, code: 2, says: "--max-temperature"},
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if code := Main(tc.args, env, &out, nvml.New()); code != tc.code || !strings.Contains(out.String(), tc.says) {
				t.Errorf("Main(%q) = %d, output:\n%s\nwant %d, saying %q", tc.args, code, out.String(), tc.code, tc.says)
			}
		})
	}
}

func TestValidateBuildsThePolicy(t *testing.T) {
	o := options{nodeName: "n", pollInterval: time.Second, ignoredXIDs: "13, 43", maxTemperature: 90, quietPeriod: time.Minute,
		reprobeBackoff: gpu.DefaultRecoveryPolicy().InitialBackoff}
	copts, err := o.validate()
	if err != nil {
		t.Fatal(err)
	}
	want := gpu.DefaultPolicy()
	want.IgnoredXIDs, want.MaxTemperatureC = []uint64{13, 43}, 90
	if diff := cmp.Diff(&want, copts.Policy); diff != "" {
		t.Errorf("policy (-want +got):\n%s", diff)
	}
	if copts.Recovery.QuietPeriod != time.Minute || copts.Recovery.InitialBackoff != gpu.DefaultRecoveryPolicy().InitialBackoff {
		t.Errorf("recovery = %+v, want the default with a 1m quiet period", copts.Recovery)
	}

	// A re-probe back-off longer than the default's cap raises the cap with it.
	o.reprobeBackoff = 10 * time.Minute
	if copts, err = o.validate(); err != nil {
		t.Fatal(err)
	}
	if r := copts.Recovery; r.InitialBackoff != 10*time.Minute || r.MaxBackoff != 10*time.Minute {
		t.Errorf("recovery = %+v, want a 10m back-off and cap", r)
	}
}
