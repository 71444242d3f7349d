package harbor

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"

	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/retention"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/models"
)

// Harbor's retention rule templates (src/pkg/retention/policy/rule: the "params" key of each is
// its own name) and limits.
const (
	TemplateLatestPushedK      = "latestPushedK"
	TemplateLatestPulledN      = "latestPulledN"
	TemplateNDaysSinceLastPush = "nDaysSinceLastPush"
	TemplateNDaysSinceLastPull = "nDaysSinceLastPull"
	TemplateAlways             = "always"
	// MaxRetentionRules is how many rules Harbor accepts in one project's retention policy.
	MaxRetentionRules = 15
)

// RetentionRule is one rule of a project retention policy: among the artifacts of the
// repositories matching RepoPattern (doublestar, "repoMatches") whose tags match (TagDecoration
// "matches") or do not match ("excludes") TagPattern, and untagged ones when Untagged is set, keep
// those Template selects with parameter Param (a count or a number of days; none for "always").
// An artifact no rule keeps is deleted.
type RetentionRule struct {
	Template      string
	Param         int64
	TagPattern    string
	TagDecoration string
	Untagged      bool
	RepoPattern   string
	Disabled      bool
}

// RetentionPolicy is a project's retention policy (one per project, linked by the project
// metadata retention_id). Cron is its schedule (Harbor's 6-field cron); empty means it runs only
// when triggered.
type RetentionPolicy struct {
	ID        int64
	ProjectID int64
	Rules     []RetentionRule
	Cron      string
}

func toModel(p RetentionPolicy) *models.RetentionPolicy {
	m := &models.RetentionPolicy{ID: p.ID, Algorithm: "or", Scope: &models.RetentionPolicyScope{Level: "project", Ref: p.ProjectID},
		Trigger: &models.RetentionRuleTrigger{Kind: "Schedule", Settings: map[string]any{"cron": p.Cron}, References: map[string]any{}},
		Rules:   []*models.RetentionRule{}}
	for i, r := range p.Rules {
		tag := &models.RetentionSelector{Kind: "doublestar", Decoration: r.TagDecoration, Pattern: r.TagPattern}
		if r.Untagged {
			tag.Extras = `{"untagged":true}`
		} else {
			tag.Extras = `{"untagged":false}`
		}
		rule := &models.RetentionRule{Priority: int64(i + 1), Disabled: r.Disabled, Action: "retain", Template: r.Template,
			TagSelectors:   []*models.RetentionSelector{tag},
			ScopeSelectors: map[string][]models.RetentionSelector{"repository": {{Kind: "doublestar", Decoration: "repoMatches", Pattern: r.RepoPattern}}}}
		if r.Template != TemplateAlways {
			// Harbor sends and expects the number itself, {"latestPushedK": 10}, where its swagger
			// says an object (harbortest allowlists this deviation).
			rule.Params = map[string]any{r.Template: r.Param}
		}
		m.Rules = append(m.Rules, rule)
	}
	return m
}

func fromModel(m *models.RetentionPolicy) (RetentionPolicy, error) {
	p := RetentionPolicy{ID: m.ID}
	if m.Scope != nil {
		p.ProjectID = m.Scope.Ref
	}
	if m.Trigger != nil {
		if s, ok := m.Trigger.Settings.(map[string]any); ok {
			p.Cron, _ = s["cron"].(string)
		}
	}
	rules := slices.DeleteFunc(slices.Clone(m.Rules), func(r *models.RetentionRule) bool { return r == nil })
	slices.SortStableFunc(rules, func(a, b *models.RetentionRule) int { return int(a.Priority - b.Priority) })
	for _, r := range rules {
		rule := RetentionRule{Template: r.Template, Disabled: r.Disabled}
		if v, ok := r.Params[r.Template]; ok {
			n, err := paramInt(v)
			if err != nil {
				return RetentionPolicy{}, fmt.Errorf("%w: rule %d param %s: %w", ErrInvalidResponse, r.ID, r.Template, err)
			}
			rule.Param = n
		}
		if len(r.TagSelectors) == 1 && r.TagSelectors[0] != nil {
			t := r.TagSelectors[0]
			rule.TagPattern, rule.TagDecoration = t.Pattern, t.Decoration
			var extras struct {
				Untagged bool `json:"untagged"`
			}
			if t.Extras != "" {
				_ = json.Unmarshal([]byte(t.Extras), &extras)
			}
			rule.Untagged = extras.Untagged
		}
		if repos := r.ScopeSelectors["repository"]; len(repos) == 1 {
			rule.RepoPattern = repos[0].Pattern
		}
		p.Rules = append(p.Rules, rule)
	}
	return p, nil
}

// paramInt reads a rule parameter: a JSON number (as Harbor sends it) or a numeric string.
func paramInt(v any) (int64, error) {
	switch x := v.(type) {
	case float64:
		return int64(x), nil
	case json.Number:
		return x.Int64()
	case string:
		return strconv.ParseInt(x, 10, 64)
	case int64:
		return x, nil
	}
	return 0, fmt.Errorf("not a number: %v", v)
}

// Retention reads a retention policy by ID.
func (c *Client) Retention(ctx context.Context, id int64) (RetentionPolicy, error) {
	op := fmt.Sprintf("reading retention policy %d", id)
	res, err := c.retention.GetRetention(ctx, retention.NewGetRetentionParams().WithID(id))
	if err != nil {
		return RetentionPolicy{}, classify(op, err)
	}
	if res.GetPayload() == nil {
		return RetentionPolicy{}, fmt.Errorf("%s: %w: empty body", op, ErrInvalidResponse)
	}
	p, err := fromModel(res.GetPayload())
	if err != nil {
		return RetentionPolicy{}, fmt.Errorf("%s: %w", op, err)
	}
	return p, nil
}

// CreateRetention creates the retention policy of project p.ProjectID (which must have none) and
// returns its ID, read from the Location Harbor answers with.
func (c *Client) CreateRetention(ctx context.Context, p RetentionPolicy) (int64, error) {
	op := fmt.Sprintf("creating the retention policy of project %d", p.ProjectID)
	res, err := c.retention.CreateRetention(ctx, retention.NewCreateRetentionParams().WithPolicy(toModel(p)))
	if err != nil {
		return 0, classify(op, err)
	}
	id, err := strconv.ParseInt(path.Base(res.Location), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w: Location %q names no policy", op, ErrInvalidResponse, res.Location)
	}
	return id, nil
}

// UpdateRetention replaces the rules and schedule of retention policy p.ID.
func (c *Client) UpdateRetention(ctx context.Context, p RetentionPolicy) error {
	_, err := c.retention.UpdateRetention(ctx, retention.NewUpdateRetentionParams().WithID(p.ID).WithPolicy(toModel(p)))
	return classify(fmt.Sprintf("updating retention policy %d", p.ID), err)
}

// DeleteRetention deletes a retention policy.
func (c *Client) DeleteRetention(ctx context.Context, id int64) error {
	_, err := c.retention.DeleteRetention(ctx, retention.NewDeleteRetentionParams().WithID(id))
	return classify(fmt.Sprintf("deleting retention policy %d", id), err)
}

// TriggerRetention starts an execution of a retention policy; a dry run only records what it would
// delete (Harbor's UI and GET /retentions/{id}/executions show the result).
func (c *Client) TriggerRetention(ctx context.Context, id int64, dryRun bool) error {
	_, _, err := c.retention.TriggerRetentionExecution(ctx, retention.NewTriggerRetentionExecutionParams().WithID(id).
		WithBody(retention.TriggerRetentionExecutionBody{DryRun: dryRun}))
	return classify(fmt.Sprintf("starting a run of retention policy %d (dry run: %v)", id, dryRun), err)
}

// RetentionRun is one execution of a retention policy, with what its tasks (one per repository)
// counted: Total artifacts looked at, Retained kept; a dry run deletes nothing but counts the same.
type RetentionRun struct {
	ID       int64
	DryRun   bool
	Status   string // Harbor's job status: Pending, Running, Succeed, Error, Stopped, ...
	Total    int64
	Retained int64
}

// LatestRetentionRun returns the most recent execution of a retention policy (the highest ID on
// the first page Harbor lists) with its task counts, and false when it never ran.
func (c *Client) LatestRetentionRun(ctx context.Context, id int64) (RetentionRun, bool, error) {
	op := fmt.Sprintf("reading the runs of retention policy %d", id)
	page, size := int64(1), int64(10)
	res, err := c.retention.ListRetentionExecutions(ctx, retention.NewListRetentionExecutionsParams().WithID(id).WithPage(&page).WithPageSize(&size))
	if err != nil {
		return RetentionRun{}, false, classify(op, err)
	}
	var latest *models.RetentionExecution
	for _, e := range res.GetPayload() {
		if e != nil && (latest == nil || e.ID > latest.ID) {
			latest = e
		}
	}
	if latest == nil {
		return RetentionRun{}, false, nil
	}
	run := RetentionRun{ID: latest.ID, DryRun: latest.DryRun, Status: latest.Status}
	tasks, err := listAll(op+": tasks", func(page, size int64) ([]*models.RetentionExecutionTask, int, int64, error) {
		res, err := c.retention.ListRetentionTasks(ctx, retention.NewListRetentionTasksParams().WithID(id).WithEid(latest.ID).WithPage(&page).WithPageSize(&size))
		if err != nil {
			return nil, 0, 0, err
		}
		return res.GetPayload(), len(res.GetPayload()), res.XTotalCount, nil
	})
	if err != nil {
		return RetentionRun{}, false, err
	}
	for _, t := range tasks {
		if t != nil {
			run.Total += t.Total
			run.Retained += t.Retained
		}
	}
	return run, true, nil
}
