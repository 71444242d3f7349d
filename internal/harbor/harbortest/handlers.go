package harbortest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
)

// handle serves one operation of Harbor's API by its operationId; faulted reports an injected fault.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, op string, params map[string]string) (faulted bool) {
	s.Mu.Lock()
	defer s.Mu.Unlock()
	s.Requests[r.Method+" "+r.URL.Path]++
	for prefix, code := range s.Faults {
		if strings.HasPrefix(r.Method+" "+r.URL.Path, prefix) {
			if code == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			}
			writeError(w, code, http.StatusText(code), "injected fault")
			return true
		}
	}
	if u, p, ok := r.BasicAuth(); !ok || u != s.Username || p != s.Password {
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
		return
	}
	projName := params["project_name_or_id"] + params["project_name"]
	proj := s.Projects[projName]
	if projName != "" && proj == nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "project "+projName+" not found")
		return
	}
	switch op {
	case "getProject":
		items := []map[string]any{}
		for _, id := range proj.CVEAllowlist {
			items = append(items, map[string]any{"cve_id": id})
		}
		writeJSON(w, http.StatusOK, map[string]any{"project_id": proj.ID, "name": params["project_name_or_id"], "metadata": proj.Metadata,
			"repo_count": 0, "current_user_role_ids": []int{1},
			"cve_allowlist": map[string]any{"id": proj.ID, "project_id": proj.ID, "items": items, "expires_at": proj.AllowlistExpiresAt}})
	case "updateProject":
		var req struct {
			Metadata     map[string]string `json:"metadata"`
			CVEAllowlist *struct {
				Items []struct {
					CVEID string `json:"cve_id"`
				} `json:"items"`
				ExpiresAt *int64 `json:"expires_at"`
			} `json:"cve_allowlist"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
			return
		}
		for k, v := range req.Metadata {
			proj.Metadata[k] = v
		}
		if al := req.CVEAllowlist; al != nil {
			proj.CVEAllowlist, proj.AllowlistExpiresAt = nil, 0
			for _, it := range al.Items {
				proj.CVEAllowlist = append(proj.CVEAllowlist, it.CVEID)
			}
			if al.ExpiresAt != nil {
				proj.AllowlistExpiresAt = *al.ExpiresAt
			}
		}
		w.WriteHeader(http.StatusOK)
	case "listProjectMembers":
		page, size := intParam(r, "page", 1), intParam(r, "page_size", 10)
		all := proj.Members
		from, to := min((page-1)*size, len(all)), min(page*size, len(all))
		var out []map[string]any
		for _, m := range all[from:to] {
			out = append(out, map[string]any{"id": m.ID, "project_id": proj.ID, "entity_name": m.Name, "entity_type": m.Kind, "role_id": m.RoleID})
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(len(all)))
		if to < len(all) {
			w.Header().Set("Link", fmt.Sprintf(`<%s?page=%d&page_size=%d>; rel="next"`, r.URL.Path, page+1, size))
		}
		if out == nil {
			out = []map[string]any{}
		}
		writeJSON(w, http.StatusOK, out)
	case "createProjectMember":
		var req struct {
			RoleID     int64 `json:"role_id"`
			MemberUser *struct {
				Username string `json:"username"`
			} `json:"member_user"`
			MemberGroup *struct {
				GroupName   string `json:"group_name"`
				GroupType   int    `json:"group_type"`
				LdapGroupDn string `json:"ldap_group_dn"`
			} `json:"member_group"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
			return
		}
		m := Member{RoleID: req.RoleID}
		switch {
		case req.MemberUser != nil && s.Users[req.MemberUser.Username]:
			m.Kind, m.Name = "u", req.MemberUser.Username
		case req.MemberGroup != nil && req.MemberGroup.GroupType == 1 && s.LDAPGroups[req.MemberGroup.LdapGroupDn] != "":
			// Harbor searches LDAP for the DN and onboards the group under its common name.
			m.Kind, m.Name = "g", s.LDAPGroups[req.MemberGroup.LdapGroupDn]
			s.onboarded[req.MemberGroup.LdapGroupDn] = m.Name
		case req.MemberGroup != nil && req.MemberGroup.GroupType != 1 && s.Groups[req.MemberGroup.GroupName]:
			m.Kind, m.Name = "g", req.MemberGroup.GroupName
		default:
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "user or group does not exist")
			return
		}
		for _, e := range proj.Members {
			if e.Kind == m.Kind && e.Name == m.Name {
				writeError(w, http.StatusConflict, "CONFLICT", "the member already exists")
				return
			}
		}
		m.ID = s.nextID
		s.nextID++
		proj.Members = append(proj.Members, m)
		w.Header().Set("Location", fmt.Sprintf("/api/v2.0/projects/%d/members/%d", proj.ID, m.ID))
		w.WriteHeader(http.StatusCreated)
	case "updateProjectMember", "deleteProjectMember":
		mid, _ := strconv.ParseInt(params["mid"], 10, 64)
		i := -1
		for j, m := range proj.Members {
			if m.ID == mid {
				i = j
			}
		}
		switch {
		case i < 0 && op == "deleteProjectMember":
			w.WriteHeader(http.StatusOK) // Harbor deletes by project and id, and a missing row is no error
			return
		case i < 0:
			writeError(w, http.StatusNotFound, "NOT_FOUND", "member not found")
			return
		}
		if op == "deleteProjectMember" {
			proj.Members = append(proj.Members[:i], proj.Members[i+1:]...)
		} else {
			var req struct {
				RoleID int64 `json:"role_id"`
			}
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				writeError(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
				return
			}
			proj.Members[i].RoleID = req.RoleID
		}
		w.WriteHeader(http.StatusOK)
	default:
		s.handleMore(w, r, op, params, proj)
	}
	return false
}

// handleMore serves robots, immutable tag rules and artifacts.
func (s *Server) handleMore(w http.ResponseWriter, r *http.Request, op string, params map[string]string, proj *Project) {
	switch op {
	case "ListRobot":
		var projectID int64 = -1
		for _, kv := range strings.Split(r.URL.Query().Get("q"), ",") {
			if v, ok := strings.CutPrefix(kv, "ProjectID="); ok {
				projectID, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		out := []map[string]any{}
		for _, rb := range s.sortedRobots() {
			if _, p := s.projectByID(projectID); p != nil && s.Projects[rb.Project] == p {
				out = append(out, map[string]any{"id": rb.ID, "name": rb.Name, "description": rb.Description, "level": "project",
					"duration": -1, "editable": true, "permissions": []map[string]any{{"kind": "project", "namespace": rb.Project, "access": rb.Access}}})
			}
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(len(out)))
		writeJSON(w, http.StatusOK, out)
	case "CreateRobot":
		var req struct {
			Name, Description, Level string
			Permissions              []struct {
				Kind, Namespace string
				Access          []map[string]string
			}
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Permissions) != 1 || req.Level != "project" {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "a project robot needs exactly one permission entry")
			return
		}
		perm := req.Permissions[0]
		if s.Projects[perm.Namespace] == nil {
			writeError(w, http.StatusNotFound, "NOT_FOUND", "project "+perm.Namespace+" not found")
			return
		}
		full := "robot$" + perm.Namespace + "+" + req.Name
		for _, rb := range s.Robots {
			if rb.Name == full {
				writeError(w, http.StatusConflict, "CONFLICT", "robot "+full+" already exists")
				return
			}
		}
		rb := &Robot{ID: s.nextID, Name: full, Description: req.Description, Project: perm.Namespace, Access: perm.Access, Secret: s.secret()}
		s.nextID++
		s.Robots[rb.ID] = rb
		w.Header().Set("Location", fmt.Sprintf("/api/v2.0/robots/%d", rb.ID))
		writeJSON(w, http.StatusCreated, map[string]any{"id": rb.ID, "name": rb.Name, "secret": rb.Secret, "expires_at": -1,
			"creation_time": time.Now().UTC().Format(time.RFC3339)})
	case "UpdateRobot":
		id, _ := strconv.ParseInt(params["robot_id"], 10, 64)
		rb := s.Robots[id]
		if rb == nil {
			writeError(w, http.StatusNotFound, "NOT_FOUND", "robot not found")
			return
		}
		var req struct {
			Name, Description string
			Permissions       []struct {
				Kind, Namespace string
				Access          []map[string]string
			}
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Permissions) != 1 || req.Permissions[0].Namespace != rb.Project {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "a project robot keeps exactly one permission entry, for its project")
			return
		}
		if req.Name != rb.Name {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "cannot update the name of a robot")
			return
		}
		rb.Description, rb.Access = req.Description, req.Permissions[0].Access
		w.WriteHeader(http.StatusOK)
	case "RefreshSec", "DeleteRobot":
		id, _ := strconv.ParseInt(params["robot_id"], 10, 64)
		rb := s.Robots[id]
		if rb == nil {
			writeError(w, http.StatusNotFound, "NOT_FOUND", "robot not found")
			return
		}
		if op == "DeleteRobot" {
			delete(s.Robots, id)
			w.WriteHeader(http.StatusOK)
			return
		}
		rb.Secret = s.secret()
		writeJSON(w, http.StatusOK, map[string]any{"secret": rb.Secret})
	case "ListImmuRules":
		w.Header().Set("X-Total-Count", strconv.Itoa(len(proj.ImmutableRules)))
		out := proj.ImmutableRules
		if out == nil {
			out = []map[string]any{}
		}
		writeJSON(w, http.StatusOK, out)
	case "CreateImmuRule":
		var rule map[string]any
		if err := json.NewDecoder(r.Body).Decode(&rule); err != nil {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
			return
		}
		rule["id"] = s.nextID
		s.nextID++
		proj.ImmutableRules = append(proj.ImmutableRules, rule)
		w.Header().Set("Location", fmt.Sprintf("/api/v2.0/projects/%d/immutabletagrules/%d", proj.ID, rule["id"]))
		w.WriteHeader(http.StatusCreated)
	case "DeleteImmuRule":
		id, _ := strconv.ParseInt(params["immutable_rule_id"], 10, 64)
		proj.ImmutableRules = slices.DeleteFunc(proj.ImmutableRules, func(m map[string]any) bool { return m["id"] == id })
		w.WriteHeader(http.StatusOK)
	case "CreateWebhookPolicyOfProject":
		s.createWebhook(w, r, proj)
	case "ListWebhookPoliciesOfProject":
		s.listWebhooks(w, proj)
	case "listArtifacts":
		// The raw path carries "tools%252Fcli": HTTP decoding gives "tools%2Fcli", and Harbor
		// unescapes the parameter once more.
		once, err1 := url.PathUnescape(params["repository_name"])
		repo, err2 := url.PathUnescape(once)
		if err1 != nil || err2 != nil || strings.Contains(once, "/") {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "repository name must have its / escaped as %252F")
			return
		}
		arts, ok := proj.Repositories[repo]
		if !ok {
			writeError(w, http.StatusNotFound, "NOT_FOUND", "repository "+repo+" not found")
			return
		}
		page, size := intParam(r, "page", 1), intParam(r, "page_size", 10)
		from, to := min((page-1)*size, len(arts)), min(page*size, len(arts))
		out := []map[string]any{}
		for _, a := range arts[from:to] {
			tags := []map[string]any{}
			for _, t := range a.Tags {
				tags = append(tags, map[string]any{"name": t, "push_time": a.PushTime.UTC().Format(time.RFC3339), "immutable": proj.TagImmutable(repo, t)})
			}
			out = append(out, map[string]any{"digest": a.Digest, "manifest_media_type": "application/vnd.oci.image.manifest.v1+json",
				"media_type": "application/vnd.oci.image.config.v1+json", "type": "IMAGE", "push_time": a.PushTime.UTC().Format(time.RFC3339),
				"tags": tags, "project_id": proj.ID})
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(len(arts)))
		writeJSON(w, http.StatusOK, out)
	case "listUserGroups":
		out := []map[string]any{}
		dn := r.URL.Query().Get("ldap_group_dn")
		for d, name := range s.onboarded {
			if dn == "" || strings.EqualFold(d, dn) {
				out = append(out, map[string]any{"id": len(out) + 1, "group_name": name, "group_type": 1, "ldap_group_dn": d})
			}
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(len(out)))
		writeJSON(w, http.StatusOK, out)
	default:
		s.handleRetention(w, r, op, params)
	}
}

func (s *Server) sortedRobots() []*Robot {
	var out []*Robot
	for _, rb := range s.Robots {
		out = append(out, rb)
	}
	slices.SortFunc(out, func(a, b *Robot) int { return int(a.ID - b.ID) })
	return out
}

func (s *Server) secret() string {
	s.nextID++
	secret := fmt.Sprintf("secret-%d-%d", s.nextID, time.Now().UnixNano())
	s.Issued = append(s.Issued, secret)
	return secret
}

// TagImmutable evaluates the project's immutable tag rules as Harbor does
// (src/pkg/immutable/match/rule): an enabled rule freezes a tag when its first repository selector
// and its first tag selector both select it, each doublestar with "matches"/"repoMatches" or
// "excludes"/"repoExcludes". Rules are held as posted (JSON decoded into map[string]any).
func (p *Project) TagImmutable(repo, tag string) bool {
	selects := func(sels any, name string) bool {
		var first map[string]any
		switch v := sels.(type) {
		case []any:
			if len(v) > 0 {
				first, _ = v[0].(map[string]any)
			}
		case []map[string]any:
			if len(v) > 0 {
				first = v[0]
			}
		}
		if first == nil || first["kind"] != "doublestar" {
			return false
		}
		pattern, _ := first["pattern"].(string)
		m, err := doublestar.Match(pattern, name)
		if err != nil {
			return false
		}
		switch first["decoration"] {
		case "matches", "repoMatches":
			return m
		case "excludes", "repoExcludes":
			return !m
		}
		return false
	}
	for _, r := range p.ImmutableRules {
		if d, _ := r["disabled"].(bool); d {
			continue
		}
		var scope any
		switch v := r["scope_selectors"].(type) {
		case map[string]any:
			scope = v["repository"]
		case map[string][]map[string]any:
			scope = v["repository"]
		}
		if selects(scope, repo) && selects(r["tag_selectors"], tag) {
			return true
		}
	}
	return false
}
