// Package harbortest is an in-memory Harbor for tests, held to Harbor's own contract: every request it
// receives and every response it sends is validated against Harbor's published OpenAPI document
// (api/v2.0/swagger.yaml of github.com/goharbor/go-client, converted from Swagger 2 to OpenAPI 3 with
// kin-openapi), and a violation fails the test. It serves the endpoints Portcullis uses; Harbor
// itself cannot run here.
package harbortest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"sigs.k8s.io/yaml"
)

// allowed lists the known places where Harbor's server deviates from its own swagger, so the fake
// reproduces Harbor rather than the document: an operation, the response status (0: any), a fragment
// of the validator's message, and why. Known for endpoints not served yet: retention rule "params" is
// sent as {"latestPushedK": 10}.
var allowed = []struct {
	operation string
	status    int
	fragment  string
	why       string
}{
	{"getProject", http.StatusNotFound, "status is not supported",
		"Harbor answers 404 NOT_FOUND for a missing project (server/v2.0/handler/project.go); the swagger lists only 200, 401 and 500"},
	{"CreateRobot", http.StatusConflict, "status is not supported",
		"Harbor answers 409 CONFLICT when a robot of that name exists; the swagger lists no 409 for CreateRobot"},
}

// Server is a fake Harbor. Its state is public for tests to set up and inspect; lock Mu around it.
type Server struct {
	*httptest.Server
	t      testing.TB
	router routers.Router

	Mu sync.Mutex
	// Projects by name.
	Projects map[string]*Project
	// Users and Groups that exist (a member must be one of them).
	Users, Groups map[string]bool
	// Username and Password are the credentials accepted (basic authentication).
	Username, Password string
	// Faults maps "METHOD /api/v2.0/path" prefixes to a status to answer instead (with Harbor's error
	// body, and Retry-After: 1 for 429).
	Faults map[string]int
	// Requests counts requests by "METHOD path".
	Requests map[string]int
	// Robots by ID.
	Robots map[int64]*Robot
	nextID int64
}

// Project is a project in the fake.
type Project struct {
	ID             int64
	Metadata       map[string]string
	Members        []Member
	ImmutableRules []map[string]any // as posted (ImmutableRule JSON), with "id" set
	// Repositories maps a repository name inside the project ("api", "tools/cli") to its artifacts.
	Repositories map[string][]Artifact
}

// Artifact is an artifact in the fake.
type Artifact struct {
	Digest   string
	Tags     []string
	PushTime time.Time
}

// Robot is a robot account in the fake.
type Robot struct {
	ID          int64
	Name        string // full name: robot$<project>+<name>
	Description string
	Project     string
	Access      []map[string]string // resource, action
	Secret      string
}

// Member is a membership in the fake.
type Member struct {
	ID     int64
	Kind   string // "u" or "g"
	Name   string
	RoleID int64
}

// Start starts a fake Harbor with one admin account; it stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, Projects: map[string]*Project{}, Users: map[string]bool{}, Groups: map[string]bool{},
		Username: "admin", Password: "Harbor12345", Faults: map[string]int{}, Requests: map[string]int{}, Robots: map[int64]*Robot{}, nextID: 1}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	doc := loadSwagger(t)
	doc.Servers = openapi3.Servers{{URL: s.URL + "/api/v2.0"}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("harbortest: routing Harbor's swagger: %v", err)
	}
	s.router = router
	return s
}

// AddProject creates a project with the given metadata and returns its ID.
func (s *Server) AddProject(name string, metadata map[string]string) int64 {
	s.Mu.Lock()
	defer s.Mu.Unlock()
	id := s.nextID
	s.nextID++
	md := map[string]string{"public": "false"}
	for k, v := range metadata {
		md[k] = v
	}
	s.Projects[name] = &Project{ID: id, Metadata: md, Repositories: map[string][]Artifact{}}
	return id
}

func (s *Server) projectByID(id int64) (string, *Project) {
	for name, p := range s.Projects {
		if p.ID == id {
			return name, p
		}
	}
	return "", nil
}

var (
	swaggerOnce sync.Once
	swaggerDoc  *openapi3.T
	swaggerErr  error
)

// loadSwagger reads api/v2.0/swagger.yaml from the go-client module and converts it to OpenAPI 3.
func loadSwagger(t testing.TB) *openapi3.T {
	swaggerOnce.Do(func() {
		dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/goharbor/go-client").Output()
		if err != nil {
			swaggerErr = fmt.Errorf("locating the go-client module: %w", err)
			return
		}
		raw, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "api", "v2.0", "swagger.yaml"))
		if err != nil {
			swaggerErr = err
			return
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			swaggerErr = err
			return
		}
		var v2 openapi2.T
		if err := json.Unmarshal(js, &v2); err != nil {
			swaggerErr = err
			return
		}
		swaggerDoc, swaggerErr = openapi2conv.ToV3(&v2)
	})
	if swaggerErr != nil {
		t.Fatalf("harbortest: loading Harbor's swagger: %v", swaggerErr)
	}
	// Each server routes its own copy (servers differ).
	c := *swaggerDoc
	return &c
}

// serve validates the request against the swagger, handles it, and validates the response.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := readAll(r)
	r.Body = nopCloser(body)
	route, params, err := s.router.FindRoute(r)
	if err != nil {
		s.violation("", fmt.Sprintf("%s %s is not in Harbor's API: %v", r.Method, r.URL.Path, err))
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such API")
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		s.violation(route.Operation.OperationID, "request: "+err.Error())
	}
	r.Body = nopCloser(body)
	rec := httptest.NewRecorder()
	faulted := s.handle(rec, r, route.Operation.OperationID, params)
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
		Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	out.SetBodyBytes(rec.Body.Bytes())
	// An injected fault stands for what is in front of Harbor (a proxy's 429, a load balancer's 503),
	// so it is not held to Harbor's document.
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil && !faulted {
		s.violationStatus(route.Operation.OperationID, rec.Code, fmt.Sprintf("response %d: %v", rec.Code, err))
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (s *Server) violation(operation, msg string) { s.violationStatus(operation, 0, msg) }

func (s *Server) violationStatus(operation string, status int, msg string) {
	for _, a := range allowed {
		if a.operation == operation && (a.status == 0 || a.status == status) && strings.Contains(msg, a.fragment) {
			return
		}
	}
	s.t.Errorf("harbortest: %s breaks Harbor's swagger: %s", operation, msg)
}

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
		writeJSON(w, http.StatusOK, map[string]any{"project_id": proj.ID, "name": params["project_name_or_id"], "metadata": proj.Metadata,
			"repo_count": 0, "current_user_role_ids": []int{1}})
	case "updateProject":
		var req struct {
			Metadata map[string]string `json:"metadata"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
			return
		}
		for k, v := range req.Metadata {
			proj.Metadata[k] = v
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
				GroupName string `json:"group_name"`
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
		case req.MemberGroup != nil && s.Groups[req.MemberGroup.GroupName]:
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
				tags = append(tags, map[string]any{"name": t, "push_time": a.PushTime.UTC().Format(time.RFC3339), "immutable": false})
			}
			out = append(out, map[string]any{"digest": a.Digest, "manifest_media_type": "application/vnd.oci.image.manifest.v1+json",
				"media_type": "application/vnd.oci.image.config.v1+json", "type": "IMAGE", "push_time": a.PushTime.UTC().Format(time.RFC3339),
				"tags": tags, "project_id": proj.ID})
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(len(arts)))
		writeJSON(w, http.StatusOK, out)
	default:
		writeError(w, http.StatusNotImplemented, "NOT_IMPLEMENTED", "harbortest does not serve "+op)
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
	return fmt.Sprintf("secret-%d-%d", s.nextID, time.Now().UnixNano())
}

func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with Harbor's error body, {"errors":[{"code","message"}]}.
func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, map[string]any{"errors": []map[string]string{{"code": errCode, "message": msg}}})
}

func readAll(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	return b.Bytes(), err
}

type bodyReader struct{ *bytes.Reader }

func (bodyReader) Close() error { return nil }

func nopCloser(b []byte) bodyReader { return bodyReader{bytes.NewReader(b)} }
