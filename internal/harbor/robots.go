package harbor

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/artifact"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/immutable"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/robot"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/models"
)

// Robot is a project-level robot account. Its secret is only known when it is created or refreshed.
type Robot struct {
	ID int64
	// Name is the full name Harbor gives it ("robot$<project>+<name>" by default).
	Name        string
	Description string
	// Project is the one project it has permissions in; Access its resource:action pairs there.
	Project string
	Access  []Access
	Disable bool
}

// Access is one resource:action permission, e.g. repository:pull.
type Access struct{ Resource, Action string }

// RobotSecret is a robot's name and secret, as returned on create or refresh only.
type RobotSecret struct {
	ID           int64
	Name, Secret string
	// ExpiresAt is when the secret stops working; zero when it never expires.
	ExpiresAt time.Time
}

// Robots lists the project-level robots of the project with the given ID (query
// Level=project,ProjectID=<id>), page by page.
func (c *Client) Robots(ctx context.Context, projectID int64) ([]Robot, error) {
	q := fmt.Sprintf("Level=project,ProjectID=%d", projectID)
	return listAll(fmt.Sprintf("listing the robots of project %d", projectID), func(page, size int64) ([]Robot, int, int64, error) {
		res, err := c.robots.ListRobot(ctx, robot.NewListRobotParams().WithQ(&q).WithPage(&page).WithPageSize(&size))
		if err != nil {
			return nil, 0, 0, err
		}
		var out []Robot
		for _, r := range res.GetPayload() {
			if r == nil {
				continue
			}
			rb := Robot{ID: r.ID, Name: r.Name, Description: r.Description, Disable: r.Disable}
			for _, p := range r.Permissions {
				if p == nil {
					continue
				}
				rb.Project = p.Namespace
				for _, a := range p.Access {
					if a != nil {
						rb.Access = append(rb.Access, Access{Resource: a.Resource, Action: a.Action})
					}
				}
			}
			out = append(out, rb)
		}
		return out, len(res.GetPayload()), res.XTotalCount, nil
	})
}

// CreateRobot creates a project-level robot with exactly one permission entry (the project, with
// access) that never expires (duration -1), and returns its secret.
func (c *Client) CreateRobot(ctx context.Context, r Robot) (RobotSecret, error) {
	op := fmt.Sprintf("creating robot %q in project %s", r.Name, r.Project)
	perm := &models.RobotPermission{Kind: "project", Namespace: r.Project}
	for _, a := range r.Access {
		perm.Access = append(perm.Access, &models.Access{Resource: a.Resource, Action: a.Action})
	}
	res, err := c.robots.CreateRobot(ctx, robot.NewCreateRobotParams().WithRobot(&models.RobotCreate{
		Name: r.Name, Description: r.Description, Level: "project", Duration: -1, Permissions: []*models.RobotPermission{perm}}))
	if err != nil {
		return RobotSecret{}, classify(op, err)
	}
	p := res.GetPayload()
	if p == nil || p.Secret == "" {
		return RobotSecret{}, fmt.Errorf("%s: %w: no secret in the answer", op, ErrInvalidResponse)
	}
	return RobotSecret{ID: p.ID, Name: p.Name, Secret: p.Secret, ExpiresAt: expiry(p.ExpiresAt)}, nil
}

// UpdateRobot sets a project robot's description and its one permission entry (the project, with
// access); its secret is unchanged.
func (c *Client) UpdateRobot(ctx context.Context, r Robot) error {
	perm := &models.RobotPermission{Kind: "project", Namespace: r.Project}
	for _, a := range r.Access {
		perm.Access = append(perm.Access, &models.Access{Resource: a.Resource, Action: a.Action})
	}
	never := int64(-1)
	_, err := c.robots.UpdateRobot(ctx, robot.NewUpdateRobotParams().WithRobotID(r.ID).WithRobot(&models.Robot{
		ID: r.ID, Name: r.Name, Description: r.Description, Level: "project", Duration: &never, Disable: r.Disable, Editable: true,
		Permissions: []*models.RobotPermission{perm}}))
	return classify(fmt.Sprintf("updating robot %q", r.Name), err)
}

// RefreshRobotSecret has Harbor generate a new secret for a robot and returns it; the old one stops
// working.
func (c *Client) RefreshRobotSecret(ctx context.Context, id int64) (string, error) {
	res, err := c.robots.RefreshSec(ctx, robot.NewRefreshSecParams().WithRobotID(id).WithRobotSec(&models.RobotSec{}))
	if err != nil {
		return "", classify(fmt.Sprintf("refreshing the secret of robot %d", id), err)
	}
	if res.GetPayload() == nil || res.GetPayload().Secret == "" {
		return "", fmt.Errorf("refreshing the secret of robot %d: %w: no secret in the answer", id, ErrInvalidResponse)
	}
	return res.GetPayload().Secret, nil
}

// DeleteRobot deletes a robot.
func (c *Client) DeleteRobot(ctx context.Context, id int64) error {
	_, err := c.robots.DeleteRobot(ctx, robot.NewDeleteRobotParams().WithRobotID(id))
	return classify(fmt.Sprintf("deleting robot %d", id), err)
}

func expiry(unix int64) time.Time {
	if unix <= 0 {
		return time.Time{}
	}
	return time.Unix(unix, 0)
}

// ImmutableRule is a tag immutability rule of a project: in repositories matching RepoPattern
// (doublestar), tags matching TagPattern (TagDecoration "matches", the default when empty) or not
// matching it ("excludes") cannot be overwritten or deleted.
type ImmutableRule struct {
	ID                      int64
	Disabled                bool
	TagPattern, RepoPattern string
	TagDecoration           string
}

// Decoration is r.TagDecoration, "matches" when empty.
func (r ImmutableRule) Decoration() string {
	if r.TagDecoration == "" {
		return "matches"
	}
	return r.TagDecoration
}

// ImmutableRules lists a project's immutable tag rules that Portcullis can express (one doublestar
// tag selector, "matches" or "excludes", and one repository selector "repoMatches"); others are
// returned with empty patterns, so that a caller never mistakes them for its own.
func (c *Client) ImmutableRules(ctx context.Context, projectName string) ([]ImmutableRule, error) {
	return listAll("listing the immutable tag rules of project "+projectName, func(page, size int64) ([]ImmutableRule, int, int64, error) {
		res, err := c.immutable.ListImmuRules(ctx, immutable.NewListImmuRulesParams().WithProjectNameOrID(projectName).
			WithXIsResourceName(&isName).WithPage(&page).WithPageSize(&size))
		if err != nil {
			return nil, 0, 0, err
		}
		var out []ImmutableRule
		for _, r := range res.GetPayload() {
			if r == nil {
				continue
			}
			rule := ImmutableRule{ID: r.ID, Disabled: r.Disabled}
			repos := r.ScopeSelectors["repository"]
			if len(r.TagSelectors) == 1 && r.TagSelectors[0] != nil && r.TagSelectors[0].Kind == "doublestar" &&
				(r.TagSelectors[0].Decoration == "matches" || r.TagSelectors[0].Decoration == "excludes") &&
				len(repos) == 1 && repos[0].Kind == "doublestar" && repos[0].Decoration == "repoMatches" {
				rule.TagPattern, rule.TagDecoration, rule.RepoPattern = r.TagSelectors[0].Pattern, r.TagSelectors[0].Decoration, repos[0].Pattern
			}
			out = append(out, rule)
		}
		return out, len(res.GetPayload()), res.XTotalCount, nil
	})
}

func immutableRule(r ImmutableRule) *models.ImmutableRule {
	return &models.ImmutableRule{ID: r.ID, Disabled: r.Disabled, Action: "immutable", Template: "immutable_template",
		TagSelectors:   []*models.ImmutableSelector{{Kind: "doublestar", Decoration: r.Decoration(), Pattern: r.TagPattern}},
		ScopeSelectors: map[string][]models.ImmutableSelector{"repository": {{Kind: "doublestar", Decoration: "repoMatches", Pattern: r.RepoPattern}}}}
}

// CreateImmutableRule adds a rule to a project.
func (c *Client) CreateImmutableRule(ctx context.Context, projectName string, r ImmutableRule) error {
	_, err := c.immutable.CreateImmuRule(ctx, immutable.NewCreateImmuRuleParams().WithProjectNameOrID(projectName).
		WithXIsResourceName(&isName).WithImmutableRule(immutableRule(r)))
	return classify(fmt.Sprintf("creating the immutable tag rule %q in project %s", r.TagPattern, projectName), err)
}

// DeleteImmutableRule deletes a rule of a project.
func (c *Client) DeleteImmutableRule(ctx context.Context, projectName string, id int64) error {
	_, err := c.immutable.DeleteImmuRule(ctx, immutable.NewDeleteImmuRuleParams().WithProjectNameOrID(projectName).
		WithXIsResourceName(&isName).WithImmutableRuleID(id))
	return classify(fmt.Sprintf("deleting immutable tag rule %d of project %s", id, projectName), err)
}

// Artifact is one artifact of a repository: its digest, tags and push time.
type Artifact struct {
	Digest    string
	MediaType string
	Tags      []string
	PushTime  time.Time
}

// Artifacts lists a repository's artifacts with their tags, page by page, so listing a Harbor
// repository needs no HEAD per tag. repository is the name inside the project ("team-a/api" in
// project "team-a" is "api"); a name with "/" is escaped once more, as Harbor requires (%252F).
func (c *Client) Artifacts(ctx context.Context, projectName, repository string) ([]Artifact, error) {
	withTag := true
	return listAll(fmt.Sprintf("listing the artifacts of %s/%s", projectName, repository), func(page, size int64) ([]Artifact, int, int64, error) {
		res, err := c.artifacts.ListArtifacts(ctx, artifact.NewListArtifactsParams().WithProjectName(projectName).
			WithRepositoryName(url.PathEscape(repository)).WithWithTag(&withTag).WithPage(&page).WithPageSize(&size))
		if err != nil {
			return nil, 0, 0, err
		}
		var out []Artifact
		for _, a := range res.GetPayload() {
			if a == nil {
				continue
			}
			art := Artifact{Digest: a.Digest, MediaType: a.ManifestMediaType, PushTime: time.Time(a.PushTime)}
			for _, t := range a.Tags {
				if t != nil {
					art.Tags = append(art.Tags, t.Name)
				}
			}
			out = append(out, art)
		}
		return out, len(res.GetPayload()), res.XTotalCount, nil
	})
}
