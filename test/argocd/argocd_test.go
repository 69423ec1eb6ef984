package argocd

import "testing"

func TestPlaceholder(t *testing.T) {}
