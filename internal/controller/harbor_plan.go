package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Change kinds and actions of status.enforcement.changes.
const (
	changeMember        = "Member"
	changeRobot         = "Robot"
	changeRobotSecret   = "RobotSecret"
	changeImmutableRule = "ImmutableRule"
	changeSetting       = "Setting"
	changeCVEAllowlist  = "CVEAllowlist"

	actionCreate = "Create"
	actionUpdate = "Update"
	actionDelete = "Delete"
	actionRotate = "Rotate"
)

// harborRoles maps the API's roles to Harbor role IDs (api/v2.0/swagger.yaml, RoleRequest).
var harborRoles = map[v1alpha1.RegistryRole]int64{
	v1alpha1.RoleProjectAdmin: 1, v1alpha1.RoleDeveloper: 2, v1alpha1.RoleGuest: 3, v1alpha1.RoleMaintainer: 4, v1alpha1.RoleLimitedGuest: 5,
}

// harborGroupTypes maps the API's group types to Harbor's group_type.
var harborGroupTypes = map[v1alpha1.GroupType]int64{v1alpha1.GroupLDAP: harbor.GroupTypeLDAP, v1alpha1.GroupHTTP: harbor.GroupTypeHTTP,
	v1alpha1.GroupOIDC: harbor.GroupTypeOIDC}

func roleName(id int64) string {
	for name, v := range harborRoles {
		if v == id {
			return string(name)
		}
	}
	return fmt.Sprintf("role %d", id)
}

// harborProject is what one project holds, as read from Harbor; missing is true when the project
// does not exist.
type harborProject struct {
	project harbor.Project
	missing bool
	members []harbor.Member
	robots  []harbor.Robot
	rules   []harbor.ImmutableRule
	// retention is the project's retention policy (metadata retention_id), nil when it has none;
	// danglingRetention is a retention_id whose policy Harbor does not find.
	retention         *harbor.RetentionPolicy
	danglingRetention int64
}

// harborStep is one write to Harbor (and, for robots, to a Secret): the changes it makes and the
// call that makes them. apply is nil for a step that can only be shown.
type harborStep struct {
	changes []v1alpha1.EnforcementChange
	apply   func(ctx context.Context) error
	// claim, when set, records in the ledger what apply is about to create, before it does (the
	// status shows it first); apply takes it back if it turns out not to be ours.
	claim func()
}

// harborLedger is what Portcullis owns, as recorded in status.enforcement; steps update it as they
// succeed, so it is right even after a pass that stopped midway.
type harborLedger struct {
	members []v1alpha1.OwnedMember
	rules   []v1alpha1.OwnedImmutableRule
	rets    []v1alpha1.OwnedRetentionPolicy
}

// harborWriter makes the writes a plan's steps apply.
type harborWriter interface {
	UpdateProjectMetadata(ctx context.Context, project string, metadata map[string]string) error
	SetCVEAllowlist(ctx context.Context, project string, al harbor.CVEAllowlist) error
	AddMember(ctx context.Context, project string, m harbor.Member) error
	SetMemberRole(ctx context.Context, project string, id, roleID int64) error
	RemoveMember(ctx context.Context, project string, id int64) error
	ImmutableRules(ctx context.Context, project string) ([]harbor.ImmutableRule, error)
	CreateImmutableRule(ctx context.Context, project string, r harbor.ImmutableRule) error
	DeleteImmutableRule(ctx context.Context, project string, id int64) error
	CreateRobot(ctx context.Context, r harbor.Robot) (harbor.RobotSecret, error)
	UpdateRobot(ctx context.Context, r harbor.Robot) error
	RefreshRobotSecret(ctx context.Context, id int64) (string, error)
	DeleteRobot(ctx context.Context, id int64) error
	LDAPGroupName(ctx context.Context, dn string) (string, bool, error)
	CreateRetention(ctx context.Context, p harbor.RetentionPolicy) (int64, error)
	UpdateRetention(ctx context.Context, p harbor.RetentionPolicy) error
	TriggerRetention(ctx context.Context, id int64, dryRun bool) error
	// writeRobotSecret stores a robot's credentials in the Secret spec names.
	writeRobotSecret(ctx context.Context, spec v1alpha1.Robot, sec harbor.RobotSecret) error
	// deleteRobotSecret deletes the Secret of a robot the policy no longer has.
	deleteRobotSecret(ctx context.Context, s *corev1.Secret) error
}

// harborPlanner computes the steps that bring Harbor to what a policy owns.
type harborPlanner struct {
	pol   *v1alpha1.RepositoryPolicy
	scope policy.HarborScope
	// state holds every project in scope, and those the last pass claimed that still exist.
	state map[string]*harborProject
	// secrets are the policy's robot Secrets by name (those labelled with a robot, owned by the
	// policy), and taken the Secrets of the robots' secretNames owned by someone else.
	secrets map[string]*corev1.Secret
	taken   map[string]bool
	// secretsDenied, when set, says why the manager may not write Secrets in the policy's
	// namespace: no robot is created or rotated and no robot Secret deleted.
	secretsDenied string
	// ldapNames maps the DN of each LDAP group in spec.access.members that Harbor has onboarded to
	// the name Harbor lists it under.
	ldapNames map[string]string
	now       time.Time
	w         harborWriter
	ledger    *harborLedger

	steps []harborStep
	// blocked are problems that keep a part of the policy from being written.
	blocked []string
	// nextRotation is the earliest time a robot secret is due for rotation, nextExpiry when the CVE
	// allowlist must change because an exception expires (zero: none).
	nextRotation, nextExpiry time.Time
}

func (p *harborPlanner) add(apply func(ctx context.Context) error, changes ...v1alpha1.EnforcementChange) {
	p.steps = append(p.steps, harborStep{changes: changes, apply: apply})
}

// plan fills p.steps: settings and CVE allowlist, members, immutable tag rules, retention, then
// robots, project by project in name order.
func (p *harborPlanner) plan() {
	var projects []string
	for name := range p.state {
		projects = append(projects, name)
	}
	slices.Sort(projects)
	for _, name := range projects {
		st := p.state[name]
		_, inScope := p.scope.Repositories[name]
		if st.missing {
			if inScope {
				p.blocked = append(p.blocked, fmt.Sprintf("project %q does not exist in Harbor (Portcullis does not create projects)", name))
			}
			continue
		}
		if inScope {
			p.planSettings(name, st)
		}
		p.planMembers(name, st, inScope)
		p.planRules(name, st, inScope)
		p.planRetention(name, st, inScope)
		p.planRobots(name, st, inScope)
	}
	p.planStraySecrets()
}

// planSettings compares spec.registrySettings with the project metadata, and the CVE allowlist.
func (p *harborPlanner) planSettings(project string, st *harborProject) {
	rs := p.pol.Spec.RegistrySettings
	if rs == nil {
		return
	}
	want := map[string]string{}
	if rs.ScanOnPush != nil {
		want["auto_scan"] = boolString(*rs.ScanOnPush)
	}
	switch rs.PreventVulnerablePulls {
	case "":
	case "NONE":
		want["prevent_vul"] = "false"
	default:
		want["prevent_vul"], want["severity"] = "true", strings.ToLower(rs.PreventVulnerablePulls)
	}
	if rs.RequireCosignSignatures != nil {
		want["enable_content_trust_cosign"] = boolString(*rs.RequireCosignSignatures)
	}
	diff := map[string]string{}
	var changes []v1alpha1.EnforcementChange
	for _, k := range sortedKeysOf(want) {
		if have, ok := st.project.Metadata[k]; !ok || have != want[k] {
			diff[k] = want[k]
			changes = append(changes, v1alpha1.EnforcementChange{Project: project, Kind: changeSetting, Name: k, Action: actionUpdate,
				Detail: fmt.Sprintf("%q -> %q", st.project.Metadata[k], want[k])})
		}
	}
	if len(diff) > 0 {
		p.add(func(ctx context.Context) error { return p.w.UpdateProjectMetadata(ctx, project, diff) }, changes...)
	}
	if !rs.CVEAllowlistFromExceptions {
		return
	}
	ids, expires := policy.HarborCVEAllowlist(&p.pol.Spec, p.now)
	p.nextExpiry = expires
	have := st.project.CVEAllowlist
	haveIDs := slices.Clone(have.IDs)
	slices.Sort(haveIDs)
	if slices.Equal(haveIDs, ids) && have.ExpiresAt.Unix() == expires.Unix() && have.ExpiresAt.IsZero() == expires.IsZero() &&
		st.project.Metadata["reuse_sys_cve_allowlist"] == "false" {
		return
	}
	detail := fmt.Sprintf("%d IDs, %s -> %d IDs, %s", len(haveIDs), expiryText(have.ExpiresAt), len(ids), expiryText(expires))
	if st.project.Metadata["reuse_sys_cve_allowlist"] != "false" {
		detail += " (and stop reusing the system allowlist)"
	}
	al := harbor.CVEAllowlist{IDs: ids, ExpiresAt: expires}
	p.add(func(ctx context.Context) error { return p.w.SetCVEAllowlist(ctx, project, al) },
		v1alpha1.EnforcementChange{Project: project, Kind: changeCVEAllowlist, Name: "cve_allowlist", Action: actionUpdate, Detail: detail})
}

func expiryText(t time.Time) string {
	if t.IsZero() {
		return "never expiring"
	}
	return "expiring " + t.UTC().Format(time.RFC3339)
}

func sortedKeysOf(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func memberName(kind harbor.MemberKind, name string) string {
	if dn, ok := strings.CutPrefix(name, "dn:"); ok && kind == harbor.GroupMember {
		return "group:" + dn
	}
	if kind == harbor.GroupMember {
		return "group:" + name
	}
	return "user:" + name
}

// planMembers adds the members spec.access lists, sets their roles, and removes the memberships
// Portcullis added that the policy no longer lists (never one it did not add).
func (p *harborPlanner) planMembers(project string, st *harborProject, inScope bool) {
	type key struct {
		kind harbor.MemberKind
		name string
	}
	want := map[key]harbor.Member{}
	if a := p.pol.Spec.Access; a != nil && inScope {
		for _, m := range a.Members {
			hm := harbor.Member{Kind: harbor.UserMember, Name: m.User, RoleID: harborRoles[m.Role]}
			if m.Group != "" {
				gt := m.GroupType
				if gt == "" {
					gt = v1alpha1.GroupOIDC
				}
				hm = harbor.Member{Kind: harbor.GroupMember, Name: m.Group, RoleID: harborRoles[m.Role], GroupType: harborGroupTypes[gt]}
				if gt == v1alpha1.GroupLDAP {
					// Added by DN, listed by the name Harbor onboarded it under (unknown until the
					// first membership: then it cannot be in the listing either).
					hm.GroupDN, hm.Name = m.Group, "dn:"+m.Group
					if name, ok := p.ldapNames[m.Group]; ok {
						hm.Name = name
					}
				}
			}
			want[key{hm.Kind, hm.Name}] = hm
		}
	}
	have := map[key]harbor.Member{}
	for _, m := range st.members {
		have[key{m.Kind, m.Name}] = m
	}
	owned := map[key]bool{}
	for _, o := range p.ledger.members {
		if o.Project == project {
			owned[key{harbor.MemberKind(o.Kind), o.Name}] = true
		}
	}
	for _, k := range sortedMemberKeys(want, func(k key) string { return string(k.kind) + k.name }) {
		m := want[k]
		cur, ok := have[k]
		switch {
		case !ok:
			wasOwned := owned[k]
			unresolved := m.GroupDN != "" && strings.HasPrefix(m.Name, "dn:")
			claim := func() { p.own(project, m) }
			if unresolved {
				claim = nil // its name is known only once Harbor has onboarded it
			}
			p.steps = append(p.steps, harborStep{
				claim: claim,
				apply: func(ctx context.Context) error {
					err := p.w.AddMember(ctx, project, m)
					if errors.Is(err, harbor.ErrConflict) && !wasOwned {
						// Harbor has the member under a name this listing did not match: not ours.
						p.disown(project, string(m.Kind), m.Name)
						return fmt.Errorf("%s is already a member of project %s, listed under another name; it is not recorded as created by Portcullis: %w",
							memberName(m.Kind, m.Name), project, err)
					}
					if err != nil || !unresolved {
						return err
					}
					name, ok, err := p.w.LDAPGroupName(ctx, m.GroupDN)
					if err != nil || !ok {
						return fmt.Errorf("LDAP group %q was added to project %s but Harbor does not list it by DN (%v): it is not recorded as created by Portcullis", m.GroupDN, project, err)
					}
					p.own(project, harbor.Member{Kind: harbor.GroupMember, Name: name})
					return nil
				},
				changes: []v1alpha1.EnforcementChange{{Project: project, Kind: changeMember, Name: memberName(m.Kind, m.Name), Action: actionCreate,
					Detail: "role " + roleName(m.RoleID)}},
			})
		case cur.RoleID != m.RoleID:
			id := cur.ID
			p.add(func(ctx context.Context) error { return p.w.SetMemberRole(ctx, project, id, m.RoleID) },
				v1alpha1.EnforcementChange{Project: project, Kind: changeMember, Name: memberName(m.Kind, m.Name), Action: actionUpdate,
					Detail: fmt.Sprintf("role %s -> %s", roleName(cur.RoleID), roleName(m.RoleID))})
		}
	}
	for _, k := range sortedMemberKeys(owned, func(k key) string { return string(k.kind) + k.name }) {
		if _, wanted := want[k]; wanted {
			continue
		}
		cur, ok := have[k]
		if !ok { // gone already: forget it
			p.disown(project, string(k.kind), k.name)
			continue
		}
		p.add(func(ctx context.Context) error {
			if err := p.w.RemoveMember(ctx, project, cur.ID); err != nil {
				return err
			}
			p.disown(project, string(k.kind), k.name)
			return nil
		}, v1alpha1.EnforcementChange{Project: project, Kind: changeMember, Name: memberName(k.kind, k.name), Action: actionDelete,
			Detail: "added by Portcullis, no longer in spec.access.members"})
	}
}

func sortedMemberKeys[K comparable, V any](m map[K]V, str func(K) string) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b K) int { return strings.Compare(str(a), str(b)) })
	return keys
}

func (p *harborPlanner) own(project string, m harbor.Member) {
	o := v1alpha1.OwnedMember{Project: project, Kind: string(m.Kind), Name: m.Name}
	if !slices.Contains(p.ledger.members, o) {
		p.ledger.members = append(p.ledger.members, o)
	}
}

func (p *harborPlanner) disown(project, kind, name string) {
	p.ledger.members = slices.DeleteFunc(p.ledger.members, func(o v1alpha1.OwnedMember) bool {
		return o.Project == project && o.Kind == kind && o.Name == name
	})
}

// planRules creates an immutable tag rule per (tag pattern, repository pattern) that no enabled
// rule already holds, and deletes the rules Portcullis created that the policy no longer asks for.
func (p *harborPlanner) planRules(project string, st *harborProject, inScope bool) {
	// A pair is one Harbor rule: its tag selector (decoration "" is "matches") and repository pattern.
	type pair struct{ tags, deco, repos string }
	var want []pair
	if im := p.pol.Spec.Immutability; im != nil && inScope {
		for _, repo := range p.scope.Repositories[project] {
			for _, tag := range im.Tags {
				sel, ok := policy.HarborImmutableTags(tag)
				if !ok {
					continue // ResolveHarborScope refused the policy before any plan
				}
				w := pair{sel.Pattern, sel.Decoration, repo}
				if w.deco == "matches" {
					w.deco = ""
				}
				if !slices.Contains(want, w) {
					want = append(want, w)
				}
			}
		}
	}
	ruleOf := func(r harbor.ImmutableRule) pair {
		w := pair{r.TagPattern, r.Decoration(), r.RepoPattern}
		if w.deco == "matches" {
			w.deco = ""
		}
		return w
	}
	name := func(w pair) string {
		if w.deco == "excludes" {
			return "all tags but " + w.tags + " in " + w.repos
		}
		return w.tags + " in " + w.repos
	}
	have := map[int64]harbor.ImmutableRule{}
	for _, r := range st.rules {
		have[r.ID] = r
	}
	// A rule with the same patterns holds the pair, even disabled by hand: Harbor refuses a second
	// rule for the same tag pattern, and re-enabling is the administrator's call.
	held := func(w pair) bool {
		for _, r := range st.rules {
			if ruleOf(r) == w {
				return true
			}
		}
		return false
	}
	for _, w := range want {
		if held(w) {
			continue
		}
		rule := harbor.ImmutableRule{TagPattern: w.tags, TagDecoration: w.deco, RepoPattern: w.repos}
		p.add(func(ctx context.Context) error {
			if err := p.w.CreateImmutableRule(ctx, project, rule); err != nil {
				return err
			}
			// Harbor answers 201 with a Location but no body: the new rule is the one with these
			// patterns that was not there before.
			rules, err := p.w.ImmutableRules(ctx, project)
			if err != nil {
				return err
			}
			for _, r := range rules {
				if _, before := have[r.ID]; !before && ruleOf(r) == w {
					p.ledger.rules = append(p.ledger.rules, v1alpha1.OwnedImmutableRule{Project: project, ID: r.ID, Tags: w.tags, TagDecoration: w.deco, Repositories: w.repos})
					have[r.ID] = r
					break
				}
			}
			return nil
		}, v1alpha1.EnforcementChange{Project: project, Kind: changeImmutableRule, Name: name(w), Action: actionCreate})
	}
	for _, o := range slices.Clone(p.ledger.rules) {
		owned := pair{o.Tags, o.TagDecoration, o.Repositories}
		if owned.deco == "matches" {
			owned.deco = ""
		}
		if o.Project != project || slices.Contains(want, owned) {
			continue
		}
		if r, ok := have[o.ID]; !ok || ruleOf(r) != owned {
			p.dropRule(o) // gone, or the ID now holds another rule: not ours to delete
			continue
		}
		p.add(func(ctx context.Context) error {
			if err := p.w.DeleteImmutableRule(ctx, project, o.ID); err != nil {
				return err
			}
			p.dropRule(o)
			return nil
		}, v1alpha1.EnforcementChange{Project: project, Kind: changeImmutableRule, Name: name(owned), Action: actionDelete,
			Detail: fmt.Sprintf("rule %d was created by Portcullis and is no longer in spec.immutability", o.ID)})
	}
}

func (p *harborPlanner) dropRule(o v1alpha1.OwnedImmutableRule) {
	p.ledger.rules = slices.DeleteFunc(p.ledger.rules, func(r v1alpha1.OwnedImmutableRule) bool { return r.Project == o.Project && r.ID == o.ID })
}
