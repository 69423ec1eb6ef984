// Package buildcheck holds a fleet the API server accepts to what the operator must make of it:
// a RayCluster and RayJobs that KubeRay accepts. The fuzz tests of rayspecs (fleets built field by
// field) and of crdschema (sample documents mutated byte by byte) share it, so that both hold the
// builders to the same promise.
package buildcheck

import (
	"fmt"
	"strings"

	rayutils "github.com/ray-project/kuberay/ray-operator/controllers/ray/utils"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/rayspecs"
)

// Fleet builds the RayCluster of f, a fleet the CRD accepts (defaulted), and the RayJob of each of
// its jobs, and returns what is wrong: a builder's error, or KubeRay refusing what was built. The
// fields the schema cannot check may fail to build, but only with an error naming them: a
// podTemplate (schemaless) and a job's runtimeEnvYAML (YAML in a string); Fleet accepts those.
// in is given to the builder as is: a fleet with a prompt needs in.Prompt.
func Fleet(f *v1alpha1.AgentFleet, in rayspecs.Inputs) error {
	rc, err := rayspecs.RayCluster(f, in, rayspecs.Options{})
	switch {
	case err != nil && !namesUncheckedPodTemplate(f, err):
		return fmt.Errorf("a valid fleet does not build: %w", err)
	case err == nil:
		if err := rayutils.ValidateRayClusterMetadata(rc.ObjectMeta); err != nil {
			return fmt.Errorf("KubeRay refuses the RayCluster's metadata: %w", err)
		}
		if err := rayutils.ValidateRayClusterSpec(&rc.Spec, rc.Annotations); err != nil {
			return fmt.Errorf("KubeRay refuses the RayCluster: %w", err)
		}
	}
	for _, j := range f.Spec.Jobs {
		rj, err := rayspecs.RayJob(f, j.Name, rayspecs.JobOptions{})
		if err != nil {
			if j.RuntimeEnvYAML != "" && strings.Contains(err.Error(), "spec.jobs["+j.Name+"].runtimeEnvYAML") {
				continue
			}
			return fmt.Errorf("a valid job %s does not build: %w", j.Name, err)
		}
		if err := rayutils.ValidateRayJobMetadata(rj.ObjectMeta); err != nil {
			return fmt.Errorf("KubeRay refuses the RayJob %s's metadata: %w", j.Name, err)
		}
		if err := rayutils.ValidateRayJobSpec(rj); err != nil {
			return fmt.Errorf("KubeRay refuses the RayJob %s: %w", j.Name, err)
		}
	}
	return nil
}

// namesUncheckedPodTemplate says whether err is about a podTemplate the fleet sets.
func namesUncheckedPodTemplate(f *v1alpha1.AgentFleet, err error) bool {
	msg := err.Error()
	return f.Spec.Head.PodTemplate != nil && strings.Contains(msg, "spec.head.podTemplate") ||
		f.Spec.Worker.PodTemplate != nil && strings.Contains(msg, "spec.worker.podTemplate")
}
