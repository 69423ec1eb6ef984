package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// Promote promotes the canary of a fleet that passed its analysis and waits for a person
// (rollout.canary.autoPromote: false): it sets the annotation agentfleet.dev/promote to the canary's
// revision and start (RolloutStatus.CanaryID), so that it promotes that canary and no other. It refuses a fleet without a canary
// waiting, or with one still being judged, saying which.
func Promote(ctx context.Context, c client.Client, key types.NamespacedName, w io.Writer) error {
	var f v1alpha1.AgentFleet
	if err := c.Get(ctx, key, &f); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("agentfleet %q not found in namespace %q", key.Name, key.Namespace)
		}
		return fmt.Errorf("getting agentfleet %s: %w", key, crdHint(err))
	}
	ro := f.Status.Rollout
	switch {
	case ro == nil || ro.Canary == nil || ro.Phase == v1alpha1.RolloutPhaseStable:
		return fmt.Errorf("agentfleet %s has no canary to promote", key)
	case ro.Phase == v1alpha1.RolloutPhaseCanary:
		return fmt.Errorf("agentfleet %s: the canary of revision %s is still being judged (%s); promote it once it passed (phase WaitingForPromotion)", key, ro.Canary.Revision, ro.Message)
	case ro.Phase != v1alpha1.RolloutPhaseWaitingForPromotion:
		return fmt.Errorf("agentfleet %s: the canary of revision %s is %s, not waiting for promotion", key, ro.Canary.Revision, ro.Phase)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{v1alpha1.AnnotationPromote: ro.CanaryID()}}})
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, &f, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("promoting agentfleet %s: %w", key, err)
	}
	_, err = fmt.Fprintf(w, "agentfleet %s: promoting revision %s\n", key, ro.Canary.Revision)
	return err
}

// runPromote is `agentfleet promote FLEET [-n NAMESPACE]`.
func runPromote(ctx context.Context, args []string, io IO) error {
	fs := newFlagSet("promote", io)
	var k kubeFlags
	k.bind(fs)
	positional, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 1 || k.allNamespaces {
		return fmt.Errorf("%w: promote takes one fleet: agentfleet promote FLEET [-n NAMESPACE]", errUsage)
	}
	c, namespace, err := k.client()
	if err != nil {
		return err
	}
	return Promote(ctx, c, types.NamespacedName{Namespace: namespace, Name: positional[0]}, io.Out)
}
