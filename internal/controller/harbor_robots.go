package controller

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor"
)

// robotMarker starts the description of every robot Portcullis creates for a policy: the policy's
// UID, so that a policy of the same name in another cluster (or recreated) never takes it for its
// own. A robot whose description does not start with it is never changed or deleted.
func robotMarker(pol *v1alpha1.RepositoryPolicy) string {
	return "portcullis:" + string(pol.UID)
}

func robotDescription(pol *v1alpha1.RepositoryPolicy) string {
	return robotMarker(pol) + " (RepositoryPolicy " + pol.Namespace + "/" + pol.Name + "; managed by Portcullis, changes made here are undone)"
}

func ownsRobot(pol *v1alpha1.RepositoryPolicy, r harbor.Robot) bool {
	m := robotMarker(pol)
	return r.Description == m || strings.HasPrefix(r.Description, m+" ")
}

// robotIs reports whether r is the project robot name of project: Harbor names it
// <prefix><project>+<name>, the prefix being "robot$" unless the administrator changed it.
func robotIs(r harbor.Robot, project, name string) bool {
	prefix, ok := strings.CutSuffix(r.Name, project+"+"+name)
	return ok && prefix != "" && !strings.Contains(prefix, "+")
}

// robotAccess turns `resource:action` permissions into Harbor access entries, sorted.
func robotAccess(perms []string) []harbor.Access {
	out := make([]harbor.Access, 0, len(perms))
	for _, p := range perms {
		res, act, _ := strings.Cut(p, ":")
		out = append(out, harbor.Access{Resource: res, Action: act})
	}
	slices.SortFunc(out, compareAccess)
	return slices.Compact(out)
}

func compareAccess(a, b harbor.Access) int {
	if c := strings.Compare(a.Resource, b.Resource); c != 0 {
		return c
	}
	return strings.Compare(a.Action, b.Action)
}

func accessText(as []harbor.Access) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.Resource + ":" + a.Action
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// planRobots creates the robots spec.access.robots lists, sets their permissions, issues a new
// secret when the Secret is missing, holds another robot's credentials, or is due for rotation, and
// deletes the robots this policy created that it no longer lists. A robot of the same name that
// Portcullis did not create blocks that robot, and is left alone.
func (p *harborPlanner) planRobots(project string, st *harborProject, inScope bool) {
	var specs []v1alpha1.Robot
	if a := p.pol.Spec.Access; a != nil && inScope {
		specs = a.Robots
	}
	desc := robotDescription(p.pol)
	if len(specs) > 0 && p.secretsDenied != "" {
		// Harbor shows a robot's secret once: a robot is created or rotated only when its Secret
		// can be written, so no credential is issued and lost.
		p.blocked = append(p.blocked, fmt.Sprintf("robots in project %q: %s", project, p.secretsDenied))
	}
	for _, spec := range specs {
		access := robotAccess(spec.Permissions)
		var found *harbor.Robot
		for i := range st.robots {
			if robotIs(st.robots[i], project, spec.Name) {
				found = &st.robots[i]
			}
		}
		secret := p.secrets[spec.SecretName]
		switch {
		case p.taken[spec.SecretName]:
			p.blocked = append(p.blocked, fmt.Sprintf("robot %q: Secret %q exists and is not this policy's Secret for it; choose another secretName or delete the Secret",
				spec.Name, spec.SecretName))
			continue
		case found != nil && !ownsRobot(p.pol, *found):
			p.blocked = append(p.blocked, fmt.Sprintf("robot %q exists in project %q and was not created by Portcullis (description %q): it is left alone; rename the robot in spec.access.robots or delete it in Harbor",
				found.Name, project, found.Description))
			continue
		case found == nil && p.secretsDenied != "":
			continue
		case found == nil:
			detail := "permissions " + accessText(access)
			if secret != nil && secret.Labels[v1alpha1.RobotLabel] == spec.Name {
				detail += "; it is missing in Harbor (deleted by hand?), so it is created again with a new secret"
			}
			r := harbor.Robot{Name: spec.Name, Description: desc, Project: project, Access: access}
			p.add(func(ctx context.Context) error {
				sec, err := p.w.CreateRobot(ctx, r)
				if err != nil {
					return err
				}
				return p.w.writeRobotSecret(ctx, spec, sec)
			}, v1alpha1.EnforcementChange{Project: project, Kind: changeRobot, Name: spec.Name, Action: actionCreate, Detail: detail})
			continue
		}
		have := slices.Clone(found.Access)
		slices.SortFunc(have, compareAccess)
		if !slices.Equal(slices.Compact(have), access) || found.Description != desc {
			upd := *found
			upd.Access, upd.Description = access, desc
			p.add(func(ctx context.Context) error { return p.w.UpdateRobot(ctx, upd) },
				v1alpha1.EnforcementChange{Project: project, Kind: changeRobot, Name: spec.Name, Action: actionUpdate,
					Detail: fmt.Sprintf("permissions %s -> %s", accessText(have), accessText(access))})
		}
		if why := p.rotationDue(spec, secret, found.ID); why != "" && p.secretsDenied == "" {
			id, full := found.ID, found.Name
			p.add(func(ctx context.Context) error {
				s, err := p.w.RefreshRobotSecret(ctx, id)
				if err != nil {
					return err
				}
				return p.w.writeRobotSecret(ctx, spec, harbor.RobotSecret{ID: id, Name: full, Secret: s})
			}, v1alpha1.EnforcementChange{Project: project, Kind: changeRobotSecret, Name: spec.Name, Action: actionRotate, Detail: why})
		}
	}
	for _, r := range st.robots {
		if !ownsRobot(p.pol, r) || slices.ContainsFunc(specs, func(s v1alpha1.Robot) bool { return robotIs(r, project, s.Name) }) {
			continue
		}
		id := r.ID
		p.add(func(ctx context.Context) error { return p.w.DeleteRobot(ctx, id) },
			v1alpha1.EnforcementChange{Project: project, Kind: changeRobot, Name: r.Name, Action: actionDelete,
				Detail: "created by Portcullis for this policy, no longer in spec.access.robots"})
	}
}

// rotationDue says why a robot needs a new secret now, or "" (and notes when it will).
func (p *harborPlanner) rotationDue(spec v1alpha1.Robot, secret *corev1.Secret, id int64) string {
	switch {
	case secret == nil:
		return fmt.Sprintf("Secret %q is missing: a new secret is issued (Harbor shows a secret only once)", spec.SecretName)
	case secret.Labels[v1alpha1.RobotLabel] != spec.Name || secret.Annotations[v1alpha1.RobotIDAnnotation] != strconv.FormatInt(id, 10):
		return fmt.Sprintf("Secret %q holds the credentials of another robot (ID %s, not %d)", spec.SecretName, secret.Annotations[v1alpha1.RobotIDAnnotation], id)
	case spec.RotateEvery == nil || spec.RotateEvery.Duration <= 0:
		return ""
	}
	rotated, err := time.Parse(time.RFC3339, secret.Annotations[v1alpha1.RotatedAtAnnotation])
	if err != nil {
		return fmt.Sprintf("Secret %q has no valid %s annotation", spec.SecretName, v1alpha1.RotatedAtAnnotation)
	}
	due := rotated.Add(spec.RotateEvery.Duration)
	if !due.After(p.now) {
		return fmt.Sprintf("rotateEvery %s: last issued %s", spec.RotateEvery.Duration, rotated.UTC().Format(time.RFC3339))
	}
	if p.nextRotation.IsZero() || due.Before(p.nextRotation) {
		p.nextRotation = due
	}
	return ""
}

// planStraySecrets deletes this policy's robot Secrets that no listed robot uses any more.
func (p *harborPlanner) planStraySecrets() {
	wanted := map[string]bool{}
	if a := p.pol.Spec.Access; a != nil {
		for _, r := range a.Robots {
			wanted[r.SecretName] = true
		}
	}
	for _, name := range sortedMemberKeys(p.secrets, func(s string) string { return s }) {
		if wanted[name] {
			continue
		}
		if p.secretsDenied != "" {
			p.blocked = append(p.blocked, fmt.Sprintf("Secret %q of a robot no longer listed is kept: %s", name, p.secretsDenied))
			continue
		}
		s := p.secrets[name]
		p.add(func(ctx context.Context) error { return p.w.deleteRobotSecret(ctx, s) },
			v1alpha1.EnforcementChange{Kind: changeRobotSecret, Name: s.Labels[v1alpha1.RobotLabel], Action: actionDelete,
				Detail: fmt.Sprintf("Secret %q: its robot is no longer in spec.access.robots", name)})
	}
}

// RobotSecretWriterRole is the ClusterRole (config/rbac/robot_secret_writer_role.yaml, with the
// install's name prefix) that grants the manager create, patch and delete on Secrets. The manager's
// own ClusterRole only reads Secrets; a cluster admin binds this one with a RoleBinding in each
// namespace whose policies may keep robot credentials (docs/registries.md#robot-credentials).
const RobotSecretWriterRole = "portcullis-robot-secret-writer"

// secretsRecheck is how soon a pass blocked by secretWritesDenied runs again.
const secretsRecheck = time.Minute

// secretWritesDenied asks the API server (SelfSubjectAccessReview, which every authenticated user
// may create) whether the manager may create, patch and delete Secrets in ns. It returns "" when it
// may, otherwise what the admin should do; the checks run before any robot is created, so a refusal
// never leaves a robot whose secret was issued and could not be stored.
func secretWritesDenied(ctx context.Context, c client.Client, ns string) (string, error) {
	var missing []string
	for _, verb := range []string{"create", "patch", "delete"} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "secrets"}}}
		if err := c.Create(ctx, review); err != nil {
			return "", fmt.Errorf("checking whether Secrets may be written in %q: %w", ns, err)
		}
		if !review.Status.Allowed {
			missing = append(missing, verb)
		}
	}
	if len(missing) == 0 {
		return "", nil
	}
	return fmt.Sprintf("the manager may not %s Secrets in namespace %q, where robot credentials are written; a cluster admin grants it with "+
		"`kubectl -n %s create rolebinding portcullis-robot-secrets --clusterrole=%s --serviceaccount=<manager namespace>:portcullis-controller-manager`",
		strings.Join(missing, ", "), ns, ns, RobotSecretWriterRole), nil
}

// harborWrites is the harborWriter of one pass: the Harbor client, and the policy's namespace for
// robot Secrets.
type harborWrites struct {
	*harbor.Client
	k8s client.Client
	// reader reads Secrets uncached (the manager's API reader): a typed Get through the cached
	// client would start an informer holding every Secret of the cluster.
	reader client.Reader
	pol    *v1alpha1.RepositoryPolicy
	host   string // the registry host the credentials are for
	now    func() time.Time
}

// dockerConfig is a kubernetes.io/dockerconfigjson document for one registry host.
func dockerConfig(host, username, password string) ([]byte, error) {
	auth := base64.StdEncoding.EncodeToString([]byte(username + ":" + password))
	return json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"username": username, "password": password, "auth": auth}}})
}

// writeRobotSecret creates or updates the robot's Secret: type kubernetes.io/dockerconfigjson, owned
// by the policy (garbage-collected with it), labelled with the robot name and annotated with the
// robot ID and issue time. A Secret of that name that is not the policy's own is never overwritten.
func (w *harborWrites) writeRobotSecret(ctx context.Context, spec v1alpha1.Robot, sec harbor.RobotSecret) error {
	data, err := dockerConfig(w.host, sec.Name, sec.Secret)
	if err != nil {
		return err
	}
	s := &corev1.Secret{}
	err = w.reader.Get(ctx, client.ObjectKey{Namespace: w.pol.Namespace, Name: spec.SecretName}, s)
	switch {
	case apierrors.IsNotFound(err):
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: w.pol.Namespace, Name: spec.SecretName}, Type: corev1.SecretTypeDockerConfigJson}
	case err != nil:
		return fmt.Errorf("reading Secret %q: %w", spec.SecretName, err)
	case !metav1.IsControlledBy(s, w.pol):
		return fmt.Errorf("Secret %q exists and is not this policy's: robot %q's credentials are not written there", spec.SecretName, spec.Name) //nolint:staticcheck // names a kind
	}
	base := s.DeepCopy()
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Labels[v1alpha1.RobotLabel] = spec.Name
	s.Annotations[v1alpha1.RobotIDAnnotation] = strconv.FormatInt(sec.ID, 10)
	s.Annotations[v1alpha1.RotatedAtAnnotation] = w.now().UTC().Format(time.RFC3339)
	s.Data = map[string][]byte{corev1.DockerConfigJsonKey: data}
	if err := controllerutil.SetControllerReference(w.pol, s, w.k8s.Scheme()); err != nil {
		return err
	}
	if s.ResourceVersion == "" {
		if err := w.k8s.Create(ctx, s); err != nil {
			return fmt.Errorf("creating Secret %q: %w", spec.SecretName, err)
		}
		return nil
	}
	if err := w.k8s.Patch(ctx, s, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("updating Secret %q: %w", spec.SecretName, err)
	}
	return nil
}

func (w *harborWrites) deleteRobotSecret(ctx context.Context, s *corev1.Secret) error {
	if err := w.k8s.Delete(ctx, s, client.Preconditions{UID: &s.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting Secret %q: %w", s.Name, err)
	}
	return nil
}
