// Package v1alpha1 is the agentfleet.dev/v1alpha1 API: the AgentFleet resource, a fleet of LLM agents
// run as the workers of a KubeRay RayCluster, declared in Git.
// +kubebuilder:object:generate=true
// +groupName=agentfleet.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "agentfleet.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this API's types.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Kind is the kind of the AgentFleet resource.
const Kind = "AgentFleet"
