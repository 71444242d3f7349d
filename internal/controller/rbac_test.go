package controller

import (
	"path/filepath"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestManagerRoleLeastPrivilege reads the ClusterRole generated from the +kubebuilder:rbac markers
// and checks the least-privilege rules: no wildcard, Secrets and ConfigMaps read-only, and no write
// outside our own kinds, events and the two trivy-operator report kinds of the compatibility export
// (never their delete).
func TestManagerRoleLeastPrivilege(t *testing.T) {
	var role rbacv1.ClusterRole
	readYAML(t, filepath.Join("..", "..", "config", "rbac", "role.yaml"), &role)
	if len(role.Rules) == 0 {
		t.Fatal("config/rbac/role.yaml has no rules")
	}
	writeVerbs := []string{"create", "update", "patch", "delete", "deletecollection", "*"}
	for _, r := range role.Rules {
		if slices.Contains(r.APIGroups, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.Verbs, "*") {
			t.Errorf("wildcard in rule %+v", r)
		}
		writes := slices.ContainsFunc(r.Verbs, func(v string) bool { return slices.Contains(writeVerbs, v) })
		for _, res := range r.Resources {
			switch {
			case res == "configmaps":
				if writes {
					t.Errorf("%s must be read-only, rule grants %v", res, r.Verbs)
				}
			case res == "secrets":
				// Robot credentials (spec.access.robots) are written to Secrets the policy owns:
				// create, patch and delete (one by one, with a UID precondition), nothing broader.
				for _, v := range r.Verbs {
					if slices.Contains(writeVerbs, v) && !slices.Contains([]string{"create", "patch", "delete"}, v) {
						t.Errorf("secrets: %s is beyond what robot credentials need (%v)", v, r.Verbs)
					}
				}
			case res == "events":
			case len(r.APIGroups) == 1 && r.APIGroups[0] == "aquasecurity.github.io" && (res == "vulnerabilityreports" || res == "exposedsecretreports"):
				if slices.Contains(r.Verbs, "delete") {
					t.Errorf("trivy-operator reports are never deleted by us (owner references do it): %v", r.Verbs)
				}
			case writes && !(len(r.APIGroups) == 1 && r.APIGroups[0] == "registry.portcullis.dev"):
				t.Errorf("write access to %s in groups %v is beyond our kinds and events", res, r.APIGroups)
			}
		}
	}
}
