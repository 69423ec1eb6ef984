package fleet

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"

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
