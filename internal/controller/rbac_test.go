package controller

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestManagerRoleLeastPrivilege reads the ClusterRole generated from the +kubebuilder:rbac markers
// and checks the least-privilege rules: no wildcard, Secrets and ConfigMaps read-only, and no write
// outside our own kinds, events, the two trivy-operator report kinds of the compatibility export
// (never their delete) and the two PolicyReport kinds (create and patch only).
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
				// Create on Secrets anywhere is enough to mint a token for any ServiceAccount: the
				// manager's ClusterRole only reads them; robot credentials are written where an
				// admin binds robot_secret_writer_role.yaml (TestRobotSecretWriterRole).
				if writes {
					t.Errorf("secrets: the manager's ClusterRole must not write Secrets (%v)", r.Verbs)
				}
			case res == "events":
			case len(r.APIGroups) == 1 && r.APIGroups[0] == "aquasecurity.github.io" && (res == "vulnerabilityreports" || res == "exposedsecretreports"):
				if slices.Contains(r.Verbs, "delete") {
					t.Errorf("trivy-operator reports are never deleted by us (owner references do it): %v", r.Verbs)
				}
			case len(r.APIGroups) == 1 && (r.APIGroups[0] == "openreports.io" && res == "reports" || r.APIGroups[0] == "wgpolicyk8s.io" && res == "policyreports"):
				// PolicyReports (--policy-reports): server-side apply only, never read back or deleted.
				if !slices.Equal(r.Verbs, []string{"create", "patch"}) {
					t.Errorf("%s: want exactly create and patch (server-side apply), got %v", res, r.Verbs)
				}
			case writes && !(len(r.APIGroups) == 1 && r.APIGroups[0] == "registry.portcullis.dev"):
				t.Errorf("write access to %s in groups %v is beyond our kinds and events", res, r.APIGroups)
			}
		}
	}
}

// TestRobotSecretWriterRole: the ClusterRole an admin binds per namespace for robot credentials
// grants create, patch and delete on Secrets and nothing else, and nothing in config/ binds it
// cluster-wide.
func TestRobotSecretWriterRole(t *testing.T) {
	var role rbacv1.ClusterRole
	readYAML(t, filepath.Join("..", "..", "config", "rbac", "robot_secret_writer_role.yaml"), &role)
	if "portcullis-"+role.Name != RobotSecretWriterRole {
		t.Errorf("the role is %q with the install's prefix, the messages name %q", "portcullis-"+role.Name, RobotSecretWriterRole)
	}
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Resources, []string{"secrets"}) || !slices.Equal(role.Rules[0].APIGroups, []string{""}) ||
		!slices.Equal(role.Rules[0].Verbs, []string{"create", "patch", "delete"}) || len(role.Rules[0].ResourceNames) != 0 {
		t.Errorf("want exactly create, patch, delete on core secrets, got %+v", role.Rules)
	}
	matches, err := filepath.Glob(filepath.Join("..", "..", "config", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "kind: ClusterRoleBinding") && strings.Contains(string(data), "name: "+role.Name) {
			t.Errorf("%s binds %s cluster-wide: bind it per namespace with a RoleBinding", m, role.Name)
		}
	}
}
