package gpunode

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentfleet/agentfleet/gpu"
)

func TestParseFaultConditions(t *testing.T) {
	for name, tc := range map[string]struct {
		in      string
		want    []FaultCondition
		wantErr string
	}{
		"the default": {in: DefaultFaultConditions, want: []FaultCondition{
			{"GPUHealthy", corev1.ConditionFalse}, {"XidCriticalError", corev1.ConditionTrue}, {"AcceleratedHardwareReady", corev1.ConditionFalse},
			{"GpuMemWatch", corev1.ConditionTrue}, {"GpuNvlinkWatch", corev1.ConditionTrue}, {"SysLogsXIDError", corev1.ConditionTrue},
		}},
		"spaces and any case":   {in: " XidCriticalError = true , GPUHealthy=FALSE,", want: []FaultCondition{{"XidCriticalError", corev1.ConditionTrue}, {"GPUHealthy", corev1.ConditionFalse}}},
		"Unknown":               {in: "Ready=Unknown", want: []FaultCondition{{"Ready", corev1.ConditionUnknown}}},
		"empty: none":           {in: "", want: nil},
		"no status":             {in: "GPUHealthy=False,XidCriticalError", wantErr: `bad GPU fault condition "XidCriticalError": want Type=Status`},
		"no type":               {in: "=True", wantErr: `bad GPU fault condition "=True": want Type=Status`},
		"a status that is none": {in: "XidCriticalError=Yes", wantErr: `bad GPU fault condition "XidCriticalError=Yes": status "Yes" is not True, False or Unknown`},
		"two equals":            {in: "A=B=True", wantErr: `bad GPU fault condition "A=B=True"`},
		"a type twice":          {in: "A=True,A=False", wantErr: `bad GPU fault condition "A=False": A is listed twice`},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseFaultConditions(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if got := DefaultFaultConditionList(); len(got) != 6 {
		t.Errorf("default list has %d conditions, want 6", len(got))
	}
}

// node is a GPU node (8 GPUs) with the given conditions; mutate changes it further.
func node(conds []corev1.NodeCondition, mutate ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-a"},
		Status: corev1.NodeStatus{
			Capacity:   corev1.ResourceList{gpu.Resource: resource.MustParse("8")},
			Conditions: append([]corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}}, conds...),
		},
	}
	for _, m := range mutate {
		m(n)
	}
	return n
}

func nc(t string, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
	return corev1.NodeCondition{Type: corev1.NodeConditionType(t), Status: s, Reason: reason, Message: msg}
}

func labelled(value string, byOperator bool) func(*corev1.Node) {
	return func(n *corev1.Node) {
		n.Labels = map[string]string{gpu.HealthLabel: value}
		if byOperator {
			n.Annotations = map[string]string{gpu.HealthSetByAnnotation: gpu.HealthSetByOperator}
		}
	}
}

func cpuNode(n *corev1.Node) {
	n.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}
}

var (
	xidGKE    = nc("XidCriticalError", corev1.ConditionTrue, "XidCriticalErrorFound", "XID 79 on GPU 0000:3b:00.0")
	xidClear  = nc("XidCriticalError", corev1.ConditionFalse, "NoXidCriticalError", "")
	eksFault  = nc("AcceleratedHardwareReady", corev1.ConditionFalse, "NvidiaDoubleBitError", "")
	agentBad  = nc(gpu.NodeConditionGPUHealthy, corev1.ConditionFalse, "XidCriticalError", "GPU-5d1c: XID 79")
	agentGood = nc(gpu.NodeConditionGPUHealthy, corev1.ConditionTrue, "AllHealthy", "")
)

func TestFault(t *testing.T) {
	conds := DefaultFaultConditionList()
	for name, tc := range map[string]struct {
		node         *corev1.Node
		wantFaulty   bool
		wantEvidence string
	}{
		"healthy":              {node(nil), false, ""},
		"GKE's XID condition":  {node([]corev1.NodeCondition{xidGKE}), true, "XidCriticalError=True (XidCriticalErrorFound: XID 79 on GPU 0000:3b:00.0)"},
		"cleared":              {node([]corev1.NodeCondition{xidClear}), false, ""},
		"EKS, reason only":     {node([]corev1.NodeCondition{eksFault}), true, "AcceleratedHardwareReady=False (NvidiaDoubleBitError)"},
		"the agent's":          {node([]corev1.NodeCondition{agentBad}), true, "GPUHealthy=False (XidCriticalError: GPU-5d1c: XID 79)"},
		"NVSentinel, no words": {node([]corev1.NodeCondition{nc("GpuNvlinkWatch", corev1.ConditionTrue, "", "")}), true, "GpuNvlinkWatch=True"},
		"several, in the order configured": {node([]corev1.NodeCondition{eksFault, xidGKE}), true,
			"XidCriticalError=True (XidCriticalErrorFound: XID 79 on GPU 0000:3b:00.0); AcceleratedHardwareReady=False (NvidiaDoubleBitError)"},
		"a condition not configured": {node([]corev1.NodeCondition{nc("KernelDeadlock", corev1.ConditionTrue, "", "")}), false, ""},
		"a long message is cut": {node([]corev1.NodeCondition{nc("SysLogsXIDError", corev1.ConditionTrue, "", strings.Repeat("x", 300))}), true,
			"SysLogsXIDError=True (" + strings.Repeat("x", 256) + "…)"},
	} {
		t.Run(name, func(t *testing.T) {
			faulty, evidence := Fault(tc.node, conds)
			if faulty != tc.wantFaulty || evidence != tc.wantEvidence {
				t.Errorf("Fault = %v, %q; want %v, %q", faulty, evidence, tc.wantFaulty, tc.wantEvidence)
			}
		})
	}
}

func TestWorkerFault(t *testing.T) {
	conds := DefaultFaultConditionList()
	for name, tc := range map[string]struct {
		node *corev1.Node
		want string
	}{
		"healthy":                                    {node(nil), ""},
		"a foreign condition, no agent":              {node([]corev1.NodeCondition{xidGKE}), "XidCriticalError=True (XidCriticalErrorFound: XID 79 on GPU 0000:3b:00.0)"},
		"the agent attributes faults to pods":        {node([]corev1.NodeCondition{agentBad}), ""},
		"the agent, healthy, over a foreign fault":   {node([]corev1.NodeCondition{agentGood, xidGKE}), ""},
		"not a GPU node":                             {node([]corev1.NodeCondition{xidGKE}, cpuNode), ""},
		"labelled unhealthy by a person":             {node(nil, labelled(gpu.HealthUnhealthy, false)), "agentfleet.dev/gpu-health=unhealthy"},
		"our label, the condition gone: not a fault": {node(nil, labelled(gpu.HealthUnhealthy, true)), ""},
		"our label with the condition":               {node([]corev1.NodeCondition{eksFault}, labelled(gpu.HealthUnhealthy, true)), "AcceleratedHardwareReady=False (NvidiaDoubleBitError)"},
		"degraded is no fault":                       {node(nil, labelled(gpu.HealthDegraded, false)), ""},
	} {
		t.Run(name, func(t *testing.T) {
			if got := WorkerFault(tc.node, conds); got != tc.want {
				t.Errorf("WorkerFault = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPlanLabel(t *testing.T) {
	conds := DefaultFaultConditionList()
	for name, tc := range map[string]struct {
		node     *corev1.Node
		disabled bool
		want     labelChange
	}{
		"healthy: nothing":                                   {node(nil), false, labelKeep},
		"a foreign fault: label":                             {node([]corev1.NodeCondition{xidGKE}), false, labelSet},
		"a foreign fault over a healthy label: label":        {node([]corev1.NodeCondition{xidGKE}, labelled(gpu.HealthHealthy, false)), false, labelSet},
		"a fault, labelled already by us: nothing":           {node([]corev1.NodeCondition{xidGKE}, labelled(gpu.HealthUnhealthy, true)), false, labelKeep},
		"a fault, labelled already by someone: nothing":      {node([]corev1.NodeCondition{xidGKE}, labelled(gpu.HealthUnhealthy, false)), false, labelKeep},
		"cleared, our label: remove":                         {node([]corev1.NodeCondition{xidClear}, labelled(gpu.HealthUnhealthy, true)), false, labelRemove},
		"cleared, someone's label: leave it":                 {node([]corev1.NodeCondition{xidClear}, labelled(gpu.HealthUnhealthy, false)), false, labelKeep},
		"the agent runs there: it owns the label":            {node([]corev1.NodeCondition{agentBad}), false, labelKeep},
		"the agent came, our label on it: disown":            {node([]corev1.NodeCondition{agentGood, xidGKE}, labelled(gpu.HealthUnhealthy, true)), false, labelDisown},
		"the label rewritten since (degraded): disown":       {node(nil, labelled(gpu.HealthDegraded, true)), false, labelDisown},
		"not a GPU node: nothing":                            {node([]corev1.NodeCondition{xidGKE}, cpuNode), false, labelKeep},
		"labelling off: nothing":                             {node([]corev1.NodeCondition{xidGKE}), true, labelKeep},
		"labelling off: the label we set goes, fault or not": {node([]corev1.NodeCondition{xidGKE}, labelled(gpu.HealthUnhealthy, true)), true, labelRemove},
	} {
		t.Run(name, func(t *testing.T) {
			if got := planLabel(tc.node, conds, !tc.disabled); got != tc.want {
				t.Errorf("planLabel = %d, want %d", got, tc.want)
			}
		})
	}
}
