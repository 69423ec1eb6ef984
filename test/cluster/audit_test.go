package cluster_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// auditedUser is the one user whose requests the package's cluster audits.
const auditedUser = "system:serviceaccount:default:audited"

// The audit log holds the requests of the users named in Options.AuditUsers, and no one else's.
func TestAuditLogHoldsOnlyTheNamedUsers(t *testing.T) {
	c := needCluster(t)
	ctx := context.Background()
	for _, sa := range []string{"audited", "unaudited"} {
		if err := c.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: "default"}}); err != nil {
			t.Fatal(err)
		}
		cfg, err := c.ServiceAccountConfig(ctx, "default", sa, nil)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Refused (no RBAC), and audited all the same.
		if _, err := cs.CoreV1().Secrets("default").Get(ctx, "from-"+sa, metav1.GetOptions{}); err == nil {
			t.Fatalf("%s read a Secret", sa)
		}
	}
	// An event is written once its response is: poll.
	var log string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		data, err := os.ReadFile(c.AuditLogPath())
		log = string(data)
		return err == nil && strings.Contains(log, `"name":"from-audited"`), nil
	})
	if err != nil {
		t.Fatalf("no event of %s's request in %s: %v\n%s", auditedUser, c.AuditLogPath(), err, log)
	}
	for _, absent := range []string{"from-unaudited", "system:serviceaccount:default:unaudited", "agentfleet-admin"} {
		if strings.Contains(log, absent) {
			t.Errorf("the audit log holds %q; it must hold only %s's requests", absent, auditedUser)
		}
	}
}
