package fleet

import (
	"context"
	"fmt"
	"slices"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/controllers/usage"
)

// AccountLease gives the usage ledger a Lease event, as the leader's Lease informer does (the
// envtests run no manager): old is the Lease before an update, nil for an add.
func (r *Reconciler) AccountLease(ctx context.Context, old, lease *coordinationv1.Lease, deleted bool) {
	if r.usage == nil {
		r.usage = usage.NewLedger()
	}
	var prev any
	if old != nil {
		prev = old
	}
	r.accountLease(ctx, prev, lease, false, deleted)
}

// NewDirectReconciler is NewReconciler on a client that reads the API server itself, as the
// envtests' synchronous reconciles do: a List by one of the cache's label indexes (indexChildren)
// is sent as the same List by the label the index is named after, which the API server serves.
func NewDirectReconciler(c client.Client, apiReader client.Reader) *Reconciler {
	return NewReconciler(labelIndexed{c}, apiReader)
}

type labelIndexed struct{ client.Client }

func (c labelIndexed) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	o := (&client.ListOptions{}).ApplyOptions(opts)
	if o.FieldSelector == nil {
		return c.Client.List(ctx, list, o)
	}
	sel := labels.Everything()
	if o.LabelSelector != nil {
		sel = o.LabelSelector
	}
	var rest []fields.Selector
	for _, req := range o.FieldSelector.Requirements() {
		if !slices.Contains(labelIndexes, req.Field) {
			rest = append(rest, fields.OneTermEqualSelector(req.Field, req.Value))
			continue
		}
		l, err := labels.NewRequirement(req.Field, selection.Equals, []string{req.Value})
		if err != nil {
			return fmt.Errorf("index %s: %w", req.Field, err)
		}
		sel = sel.Add(*l)
	}
	o.LabelSelector, o.FieldSelector = sel, nil
	if len(rest) > 0 {
		o.FieldSelector = fields.AndSelectors(rest...)
	}
	return c.Client.List(ctx, list, o)
}
