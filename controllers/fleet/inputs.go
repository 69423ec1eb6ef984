package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
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
		key := client.ObjectKey{Namespace: f.Namespace, Name: ref.Name}
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
		err := r.Get(ctx, key, meta)
		var data map[string]string
		if err == nil {
			data, err = promptData.get(ctx, key, meta.ResourceVersion, readConfigMapData(r.APIReader, key))
		}
		if err != nil {
			if apierrors.IsNotFound(err) {
				promptData.forget(key)
				s.block(blocker{reason: v1alpha1.ReasonPromptNotFound, degraded: true, stalled: true,
					message: fmt.Sprintf("prompt ConfigMap %s/%s not found (spec.prompt.configMapRef)%s", f.Namespace, ref.Name, heldInputs)})
				return nil
			}
			return fmt.Errorf("reading the prompt ConfigMap %s: %w", ref.Name, err)
		}
		text, ok := data[ref.Key]
		if !ok {
			keys := make([]string, 0, len(data))
			for k := range data {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			s.block(blocker{reason: v1alpha1.ReasonPromptNotFound, degraded: true, stalled: true,
				message: fmt.Sprintf("prompt ConfigMap %s/%s has no key %q (it has: %s)%s", f.Namespace, ref.Name, ref.Key, strings.Join(keys, ", "), heldInputs)})
			return nil
		}
		s.prompt = &text
	}
	var missing, noKey []string
	for _, name := range indexSecrets(f) {
		secret := &metav1.PartialObjectMetadata{}
		secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		key := client.ObjectKey{Namespace: f.Namespace, Name: name}
		if err := r.Get(ctx, key, secret); err != nil {
			if apierrors.IsNotFound(err) {
				secretKeys.forget(key)
				missing = append(missing, name)
				continue
			}
			return fmt.Errorf("reading Secret %s: %w", name, err)
		}
		// A key that disappears holds the fleet as a missing Secret does: a worker started without
		// it would fail with CreateContainerConfigError, and its replacements too (issue 14).
		keys, err := secretKeys.get(ctx, key, secret.ResourceVersion, readSecretKeys(r.APIReader, key))
		if err != nil {
			return err
		}
		for _, e := range f.Spec.SecretEnv {
			if e.SecretKeyRef.Name == name && !keys.Has(e.SecretKeyRef.Key) {
				noKey = append(noKey, fmt.Sprintf("Secret %s in %s has no key %q (spec.secretEnv %s)", name, f.Namespace, e.SecretKeyRef.Key, e.Name))
			}
		}
	}
	switch {
	case len(missing) > 0:
		s.block(blocker{reason: v1alpha1.ReasonSecretNotFound, degraded: true, stalled: true,
			message: fmt.Sprintf("Secrets not found in %s (spec.secretEnv): %s%s", f.Namespace, strings.Join(missing, ", "), heldInputs)})
	case len(noKey) > 0:
		s.block(blocker{reason: v1alpha1.ReasonSecretNotFound, degraded: true, stalled: true,
			message: strings.Join(noKey, "; ") + heldInputs})
	}
	return nil
}

// heldInputs ends the message of a fleet held by a missing input: what happens to a fleet that
// already runs (its RayCluster is left as it is, and no worker is replaced: a replacement could not
// start either).
const heldInputs = ": no new worker could start; the running workers keep theirs, and the RayCluster is left as it is until it is back"

// secretKeys are the key names, never the values, of the Secrets fleets reference, and promptData
// the data of the prompt ConfigMaps, by resourceVersion. Only the metadata of Secrets and
// ConfigMaps is cached; their contents are read from the API server only when the object changed
// (as ConfigMapPrices does), so that a fleet that is not changing costs no request for them (a
// 1 MiB prompt was read on every reconcile before), and Secrets' values are dropped at once.
var (
	secretKeys = &byVersion[sets.Set[string]]{}
	promptData = &byVersion[map[string]string]{}
)

// byVersion keeps one value read from each object, with the resourceVersion it was read at.
type byVersion[T any] struct {
	mu      sync.Mutex
	entries map[client.ObjectKey]versioned[T]
}

type versioned[T any] struct {
	version string
	value   T
}

// get returns the value of the object key at resourceVersion version (from the cache's metadata),
// calling read, which returns the value and the version it read, when that version was not read
// yet. read's errors are returned as they are.
func (c *byVersion[T]) get(ctx context.Context, key client.ObjectKey, version string, read func(context.Context) (string, T, error)) (T, error) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && e.version == version {
		return e.value, nil
	}
	v, value, err := read(ctx)
	if err != nil {
		return value, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[client.ObjectKey]versioned[T]{}
	}
	c.entries[key] = versioned[T]{version: v, value: value}
	return value, nil
}

func (c *byVersion[T]) forget(key client.ObjectKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
}

// readSecretKeys reads the key names of a Secret; one deleted since the cache saw it has none, for
// now.
func readSecretKeys(reader client.Reader, key client.ObjectKey) func(context.Context) (string, sets.Set[string], error) {
	return func(ctx context.Context) (string, sets.Set[string], error) {
		secret := &corev1.Secret{}
		if err := reader.Get(ctx, key, secret); err != nil {
			if apierrors.IsNotFound(err) {
				return "", sets.New[string](), nil
			}
			return "", nil, fmt.Errorf("reading the keys of Secret %s: %w", key.Name, err)
		}
		return secret.ResourceVersion, sets.KeySet(secret.Data), nil
	}
}

// readConfigMapData reads the data of a ConfigMap.
func readConfigMapData(reader client.Reader, key client.ObjectKey) func(context.Context) (string, map[string]string, error) {
	return func(ctx context.Context) (string, map[string]string, error) {
		cm := &corev1.ConfigMap{}
		if err := reader.Get(ctx, key, cm); err != nil {
			return "", nil, err
		}
		return cm.ResourceVersion, cm.Data, nil
	}
}
