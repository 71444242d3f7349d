package controller

import (
	"strings"
	"testing"
)

// TestConflictMessageNamesOnlyOwnNamespace: a project conflict names the owning policy only when it
// is in the same namespace; another tenant's namespace and policy stay undisclosed.
func TestConflictMessageNamesOnlyOwnNamespace(t *testing.T) {
	if msg := conflictMessage("team-a", "team-a-ns/first", "team-a-ns"); !strings.Contains(msg, "RepositoryPolicy team-a-ns/first") {
		t.Errorf("same namespace: %q", msg)
	}
	msg := conflictMessage("team-a", "other-tenant/secret-policy", "team-a-ns")
	if strings.Contains(msg, "other-tenant") || strings.Contains(msg, "secret-policy") || !strings.Contains(msg, "another namespace") {
		t.Errorf("another namespace: %q", msg)
	}
}
