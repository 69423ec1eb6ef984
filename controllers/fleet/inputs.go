package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// dependencyPoll is how often dependencies are read when their kind cannot be watched.
const dependencyPoll = 10 * time.Second

// Field indexes of fleets by what they reference, for the watches on ConfigMaps and Secrets.
const (
	promptIndex = "agentfleet.dev/prompt-configmap"
	secretIndex = "agentfleet.dev/secrets"
)

func indexPrompt(o client.Object) []string {
	if p := o.(*v1alpha1.AgentFleet).Spec.Prompt; p != nil {
		return []string{p.ConfigMapRef.Name}
	}
	return nil
}

func indexSecrets(o client.Object) []string {
	var names []string
	for _, e := range o.(*v1alpha1.AgentFleet).Spec.SecretEnv {
		if !slices.Contains(names, e.SecretKeyRef.Name) {
			names = append(names, e.SecretKeyRef.Name)
		}
	}
	return names
}

// reconcileInputs resolves the prompt text and checks that the Secrets the agents read exist: a
// missing one would leave every new pod unable to start, so nothing is created until it is there.
func (r *Reconciler) reconcileInputs(ctx context.Context, s *scope) error {
	f := s.fleet
	if p := f.Spec.Prompt; p != nil {
		ref := p.ConfigMapRef
		cm := &corev1.ConfigMap{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: ref.Name}, cm); err != nil {
			if apierrors.IsNotFound(err) {
				s.block(blocker{reason: v1alpha1.ReasonPromptNotFound, degraded: true, stalled: true,
					message: fmt.Sprintf("prompt ConfigMap %s/%s not found (spec.prompt.configMapRef)", f.Namespace, ref.Name)})
				return nil
			}
			return fmt.Errorf("reading the prompt ConfigMap %s: %w", ref.Name, err)
		}
		text, ok := cm.Data[ref.Key]
		if !ok {
			keys := make([]string, 0, len(cm.Data))
			for k := range cm.Data {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			s.block(blocker{reason: v1alpha1.ReasonPromptNotFound, degraded: true, stalled: true,
				message: fmt.Sprintf("prompt ConfigMap %s/%s has no key %q (it has: %s)", f.Namespace, ref.Name, ref.Key, strings.Join(keys, ", "))})
			return nil
		}
		s.prompt = &text
	}
	var missing []string
	for _, name := range indexSecrets(f) {
		secret := &metav1.PartialObjectMetadata{}
		secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		if err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: name}, secret); err != nil {
			if apierrors.IsNotFound(err) {
				missing = append(missing, name)
				continue
			}
			return fmt.Errorf("reading Secret %s: %w", name, err)
		}
	}
	if len(missing) > 0 {
		s.block(blocker{reason: v1alpha1.ReasonSecretNotFound, degraded: true, stalled: true,
			message: fmt.Sprintf("Secrets not found in %s (spec.secretEnv): %s", f.Namespace, strings.Join(missing, ", "))})
	}
	return nil
}
