package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/test/cluster"
)

// The operator of the e2e tests runs with least privilege: as a ServiceAccount bound to exactly the
// ClusterRole the repository ships (config/rbac/role.yaml, generated from the +kubebuilder:rbac
// markers; the chart and config/default install the same rules), with a token from the TokenRequest
// API, as the chart's Deployment would. A verb the operator uses and the role lacks fails the e2e
// tests that need it.
const (
	operatorNamespace      = "agentfleet-system"
	operatorServiceAccount = "agentfleet-operator"
)

// operatorKubeconfig binds the shipped ClusterRole to the operator's ServiceAccount and writes a
// kubeconfig with that ServiceAccount's token into the cluster's folder.
func operatorKubeconfig(ctx context.Context, c *cluster.Cluster) (string, error) {
	rolePath, err := cluster.RepoPath("config/rbac/role.yaml")
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(rolePath)
	if err != nil {
		return "", err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		return "", fmt.Errorf("decoding %s: %w", rolePath, err)
	}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: operatorServiceAccount, Namespace: operatorNamespace}},
		role,
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: operatorServiceAccount, Namespace: operatorNamespace}},
		},
	} {
		if err := c.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	cfg, err := c.ServiceAccountConfig(ctx, operatorNamespace, operatorServiceAccount, nil)
	if err != nil {
		return "", err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos[operatorServiceAccount] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["operator"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: operatorServiceAccount}
	kc.CurrentContext = "operator"
	path := filepath.Join(c.Dir, "operator.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", err
	}
	return path, nil
}
