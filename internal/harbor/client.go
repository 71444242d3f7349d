// Package harbor speaks the parts of Harbor's v2.0 REST API (api/v2.0/swagger.yaml) that Portcullis
// reads and writes back to: projects and their metadata (the security switches), project members,
// project robot accounts, immutable tag rules, retention policies and their runs, and artifacts with
// their tags. It is
// built on the generated client github.com/goharbor/go-client, with basic authentication and no
// cookie jar (Harbor checks CSRF tokens only for requests that carry its session cookie).
//
// Every error wraps one of the kinds in errors.go. Tests run against harbortest, a server held to the
// same swagger by an OpenAPI validator.
package harbor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	rtclient "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/artifact"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/immutable"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/member"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/project"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/retention"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/robot"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/client/usergroup"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/models"

	"github.com/portcullis-dev/portcullis/internal/egress"
)

// PageSize is the page size asked for when listing (Harbor allows at most 100).
const PageSize = 100

// maxPages bounds a listing (100 000 entries), so a server that pages forever cannot hang a pass.
const maxPages = 1000

// Config says how to reach one Harbor.
type Config struct {
	// URL is Harbor's base URL, e.g. https://harbor.example.com (the API is under /api/v2.0).
	URL string
	// Username and Password authenticate every request (basic authentication): a user, or a
	// system-level robot account ("robot$name") with the permissions the policy needs.
	Username, Password string
	// CAPEM holds extra PEM CA certificates to trust besides the system roots.
	CAPEM []byte
	// Egress checks every connection at dial time, on the resolved address (redirects included);
	// nil checks nothing.
	Egress *egress.Policy
	// Timeout bounds each request (default 30s).
	Timeout time.Duration
}

// Client is a Harbor API client. It is safe for concurrent use.
type Client struct {
	projects  *project.Client
	members   *member.Client
	robots    *robot.Client
	immutable *immutable.Client
	artifacts *artifact.Client
	retention *retention.Client
	groups    *usergroup.Client
}

// New builds a Client. It fails when the URL does not parse or the CA bundle holds no certificate.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("harbor URL %q: want http(s)://host[:port]", cfg.URL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = cfg.Egress.Dialer(30*time.Second, 30*time.Second).DialContext
	if len(cfg.CAPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, fmt.Errorf("harbor CA bundle holds no PEM certificate")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	hc := &http.Client{Transport: tr, Timeout: timeout} // no Jar: no session cookie, no CSRF check
	rt := rtclient.NewWithClient(u.Host, path.Join("/", u.Path, "api/v2.0"), []string{u.Scheme}, hc)
	auth := rtclient.BasicAuth(cfg.Username, cfg.Password)
	return &Client{projects: project.New(rt, strfmt.Default, auth), members: member.New(rt, strfmt.Default, auth),
		robots: robot.New(rt, strfmt.Default, auth), immutable: immutable.New(rt, strfmt.Default, auth),
		artifacts: artifact.New(rt, strfmt.Default, auth), retention: retention.New(rt, strfmt.Default, auth),
		groups: usergroup.New(rt, strfmt.Default, auth)}, nil
}

// Project is a Harbor project with its metadata, all string values as Harbor stores them ("true",
// "false", "high", ...): public, auto_scan, prevent_vul, severity, enable_content_trust_cosign,
// reuse_sys_cve_allowlist, retention_id, ...
type Project struct {
	ID       int64
	Name     string
	Metadata map[string]string
	// CVEAllowlist is the project's own CVE allowlist (used when metadata reuse_sys_cve_allowlist is
	// not "true").
	CVEAllowlist CVEAllowlist
}

// CVEAllowlist is a project's CVE allowlist: CVE IDs whose findings do not block pulls, with one
// expiry for all of them.
type CVEAllowlist struct {
	// IDs are the CVE IDs, as Harbor's cve_id.
	IDs []string
	// ExpiresAt is when the allowlist stops applying; zero means never.
	ExpiresAt time.Time
}

var isName = true

// Project reads a project by name (X-Is-Resource-Name, so a numeric name is not taken for an ID).
func (c *Client) Project(ctx context.Context, name string) (Project, error) {
	op := "reading project " + name
	res, err := c.projects.GetProject(ctx, project.NewGetProjectParams().WithProjectNameOrID(name).WithXIsResourceName(&isName))
	if err != nil {
		return Project{}, classify(op, err)
	}
	p := res.GetPayload()
	if p == nil {
		return Project{}, fmt.Errorf("%s: %w: empty body", op, ErrInvalidResponse)
	}
	out := Project{ID: int64(p.ProjectID), Name: p.Name, Metadata: map[string]string{}}
	if al := p.CVEAllowlist; al != nil {
		for _, it := range al.Items {
			if it != nil && it.CVEID != "" {
				out.CVEAllowlist.IDs = append(out.CVEAllowlist.IDs, it.CVEID)
			}
		}
		if al.ExpiresAt != nil {
			out.CVEAllowlist.ExpiresAt = expiry(*al.ExpiresAt)
		}
	}
	if p.Metadata != nil {
		raw, err := json.Marshal(p.Metadata)
		if err != nil {
			return Project{}, fmt.Errorf("%s: %w: %w", op, ErrInvalidResponse, err)
		}
		if err := json.Unmarshal(raw, &out.Metadata); err != nil {
			return Project{}, fmt.Errorf("%s: %w: %w", op, ErrInvalidResponse, err)
		}
	}
	return out, nil
}

// UpdateProjectMetadata sets the given metadata keys of a project (PUT /projects/{name} with only
// metadata; other keys keep their values). Keys must be among models.ProjectMetadata's.
func (c *Client) UpdateProjectMetadata(ctx context.Context, name string, metadata map[string]string) error {
	op := "updating the metadata of project " + name
	raw, err := json.Marshal(metadata)
	if err != nil {
		return err
	}
	md := &models.ProjectMetadata{}
	if err := json.Unmarshal(raw, md); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_, err = c.projects.UpdateProject(ctx, project.NewUpdateProjectParams().WithProjectNameOrID(name).WithXIsResourceName(&isName).
		WithProject(&models.ProjectReq{Metadata: md}))
	return classify(op, err)
}

// SetCVEAllowlist replaces a project's CVE allowlist and sets reuse_sys_cve_allowlist to "false",
// so the project's own list applies (PUT /projects/{name} with cve_allowlist).
func (c *Client) SetCVEAllowlist(ctx context.Context, name string, al CVEAllowlist) error {
	op := "updating the CVE allowlist of project " + name
	list := &models.CVEAllowlist{Items: []*models.CVEAllowlistItem{}}
	for _, id := range al.IDs {
		list.Items = append(list.Items, &models.CVEAllowlistItem{CVEID: id})
	}
	if !al.ExpiresAt.IsZero() {
		at := al.ExpiresAt.Unix()
		list.ExpiresAt = &at
	}
	reuse := "false"
	_, err := c.projects.UpdateProject(ctx, project.NewUpdateProjectParams().WithProjectNameOrID(name).WithXIsResourceName(&isName).
		WithProject(&models.ProjectReq{CVEAllowlist: list, Metadata: &models.ProjectMetadata{ReuseSysCVEAllowlist: &reuse}}))
	return classify(op, err)
}

// MemberKind is a member's entity type: a user or a group (LDAP, HTTP or OIDC).
type MemberKind string

// Member kinds, as Harbor's entity_type.
const (
	UserMember  MemberKind = "u"
	GroupMember MemberKind = "g"
)

// Member is a project member.
type Member struct {
	// ID is the membership's ID (the mid of the member endpoints); 0 for a member to add.
	ID   int64
	Kind MemberKind
	// Name is the user name or group name.
	Name string
	// RoleID is Harbor's role: 1 projectAdmin, 2 developer, 3 guest, 4 maintainer, 5 limitedGuest.
	RoleID int64
	// GroupType is, for a group to add, Harbor's group type: 1 LDAP, 2 HTTP, 3 OIDC. An LDAP group
	// is added by its DN, GroupDN (Harbor onboards it and lists it under its common name).
	GroupType int64
	GroupDN   string
}

// GroupType values (Harbor's group_type).
const (
	GroupTypeLDAP int64 = 1
	GroupTypeHTTP int64 = 2
	GroupTypeOIDC int64 = 3
)

// LDAPGroupName returns the name under which Harbor lists the LDAP group with this DN (GET
// /usergroups?ldap_group_dn=...), and false when Harbor has not onboarded it yet (it does on the
// first membership). Listing user groups needs Harbor's system-level "user-group: list" right.
func (c *Client) LDAPGroupName(ctx context.Context, dn string) (string, bool, error) {
	op := fmt.Sprintf("looking up the LDAP group %q", dn)
	size := int64(PageSize)
	res, err := c.groups.ListUserGroups(ctx, usergroup.NewListUserGroupsParams().WithLdapGroupDn(&dn).WithPageSize(&size))
	if err != nil {
		return "", false, classify(op, err)
	}
	for _, g := range res.GetPayload() {
		if g != nil && g.GroupType == GroupTypeLDAP && strings.EqualFold(g.LdapGroupDn, dn) {
			return g.GroupName, true, nil
		}
	}
	return "", false, nil
}

// Members lists a project's members, page by page.
func (c *Client) Members(ctx context.Context, projectName string) ([]Member, error) {
	return listAll("listing the members of project "+projectName, func(page, size int64) ([]Member, int, int64, error) {
		res, err := c.members.ListProjectMembers(ctx, member.NewListProjectMembersParams().WithProjectNameOrID(projectName).
			WithXIsResourceName(&isName).WithPage(&page).WithPageSize(&size))
		if err != nil {
			return nil, 0, 0, err
		}
		var out []Member
		for _, m := range res.GetPayload() {
			if m != nil {
				out = append(out, Member{ID: m.ID, Kind: MemberKind(m.EntityType), Name: m.EntityName, RoleID: m.RoleID})
			}
		}
		return out, len(res.GetPayload()), res.XTotalCount, nil
	})
}

// listAll reads a listing page by page (page_size PageSize). fetch returns one page's items, the
// number of entries Harbor sent (nulls included) and X-Total-Count (0 when absent); the listing
// ends at a short page or once the total is reached, and more than maxPages pages is
// ErrInvalidResponse. op names the listing in errors.
func listAll[T any](op string, fetch func(page, size int64) (items []T, sent int, total int64, err error)) ([]T, error) {
	var out []T
	size := int64(PageSize)
	for page := int64(1); page <= maxPages; page++ {
		items, sent, total, err := fetch(page, size)
		if err != nil {
			return nil, classify(op, err)
		}
		out = append(out, items...)
		if int64(sent) < size || (total > 0 && int64(len(out)) >= total) {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%s: %w: more than %d pages", op, ErrInvalidResponse, maxPages)
}

// AddMember adds a user or group to a project with a role. A member already there is ErrConflict.
func (c *Client) AddMember(ctx context.Context, projectName string, m Member) error {
	op := fmt.Sprintf("adding %s %q to project %s", m.Kind, m.Name, projectName)
	req := &models.ProjectMember{RoleID: m.RoleID}
	switch m.Kind {
	case UserMember:
		req.MemberUser = &models.UserEntity{Username: m.Name}
	case GroupMember:
		req.MemberGroup = &models.UserGroup{GroupName: m.Name, GroupType: m.GroupType}
		if m.GroupType == GroupTypeLDAP {
			req.MemberGroup = &models.UserGroup{GroupType: GroupTypeLDAP, LdapGroupDn: m.GroupDN}
		}
	default:
		return fmt.Errorf("%s: member kind %q is neither u nor g", op, m.Kind)
	}
	_, err := c.members.CreateProjectMember(ctx, member.NewCreateProjectMemberParams().WithProjectNameOrID(projectName).
		WithXIsResourceName(&isName).WithProjectMember(req))
	return classify(op, err)
}

// SetMemberRole changes a membership's role.
func (c *Client) SetMemberRole(ctx context.Context, projectName string, id, roleID int64) error {
	_, err := c.members.UpdateProjectMember(ctx, member.NewUpdateProjectMemberParams().WithProjectNameOrID(projectName).
		WithXIsResourceName(&isName).WithMid(id).WithRole(&models.RoleRequest{RoleID: roleID}))
	return classify(fmt.Sprintf("changing the role of member %d of project %s", id, projectName), err)
}

// RemoveMember removes a membership.
func (c *Client) RemoveMember(ctx context.Context, projectName string, id int64) error {
	_, err := c.members.DeleteProjectMember(ctx, member.NewDeleteProjectMemberParams().WithProjectNameOrID(projectName).
		WithXIsResourceName(&isName).WithMid(id))
	return classify(fmt.Sprintf("removing member %d from project %s", id, projectName), err)
}
