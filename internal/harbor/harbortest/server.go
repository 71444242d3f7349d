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
	"os"
	"os/exec"
	"path/filepath"
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
// of the validator's message, and why.
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
	// Retention rule params: the swagger declares additionalProperties of type object, but Harbor's
	// UI and server use the number itself, {"latestPushedK": 10} (src/pkg/retention/policy/rule).
	{"createRetention", 0, "/params/", "retention rule params are sent as numbers, e.g. {\"latestPushedK\": 10}"},
	{"updateRetention", 0, "/params/", "retention rule params are sent as numbers, e.g. {\"latestPushedK\": 10}"},
	{"getRetention", http.StatusOK, "/params/", "retention rule params come back as numbers, e.g. {\"latestPushedK\": 10}"},
	{"getRetention", http.StatusNotFound, "status is not supported",
		"Harbor answers 404 for a retention policy that does not exist; the swagger lists no 404"},
}

// Server is a fake Harbor. Its state is public for tests to set up and inspect; lock Mu around it.
type Server struct {
	*httptest.Server
	t      testing.TB
	router routers.Router

	Mu sync.Mutex
	// Projects by name.
	Projects map[string]*Project
	// Users and Groups that exist (a member must be one of them). LDAPGroups maps the DN of an LDAP
	// group to its common name; Harbor onboards one (adds it to Groups) on its first membership.
	Users, Groups map[string]bool
	LDAPGroups    map[string]string
	// Username and Password are the credentials accepted (basic authentication).
	Username, Password string
	// Faults maps "METHOD /api/v2.0/path" prefixes to a status to answer instead (with Harbor's error
	// body, and Retry-After: 1 for 429).
	Faults map[string]int
	// Requests counts requests by "METHOD path".
	Requests map[string]int
	// Robots by ID.
	Robots map[int64]*Robot
	// Issued are every robot secret this server has issued (created or refreshed), for tests that
	// look for them where they must not be.
	Issued []string
	// onboarded are the LDAP groups Harbor knows (DN -> name).
	onboarded map[string]string
	// Retentions are the retention policies by ID, as posted (RetentionPolicy JSON, "id" set);
	// RetentionRuns the runs triggered.
	Retentions    map[int64]map[string]any
	RetentionRuns []RetentionRun
	// V2, when set, serves the OCI distribution API under /v2/ (Harbor fronts a Distribution), so a
	// Registry of provider Harbor can list this server; it is not checked against the swagger. Set
	// it under Mu.
	V2 http.Handler
	// Deliveries are the webhook requests sent (Notify), in order.
	Deliveries []Delivery
	nextID     int64
}

// Project is a project in the fake.
type Project struct {
	ID             int64
	Metadata       map[string]string
	Members        []Member
	ImmutableRules []map[string]any // as posted (ImmutableRule JSON), with "id" set
	// CVEAllowlist is the project's allowlist (CVE IDs) and AllowlistExpiresAt its expiry (Unix
	// seconds; 0 or less: never).
	CVEAllowlist       []string
	AllowlistExpiresAt int64
	// Webhooks are the project's webhook policies (webhooks.go).
	Webhooks []Webhook
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

// RetentionRun is a triggered retention execution; the fake runs it at once (status Succeed) and
// records, per repository, how many artifacts it looked at and kept.
type RetentionRun struct {
	PolicyID int64
	DryRun   bool
	Tasks    []RetentionTask
}

// RetentionTask is what one run did in one repository.
type RetentionTask struct {
	Repository      string
	Total, Retained int
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
	s := &Server{t: t, Projects: map[string]*Project{}, Users: map[string]bool{}, Groups: map[string]bool{}, LDAPGroups: map[string]string{},
		Username: "admin", Password: "Harbor12345", Faults: map[string]int{}, Requests: map[string]int{}, Robots: map[int64]*Robot{}, onboarded: map[string]string{}, Retentions: map[int64]map[string]any{}, nextID: 1}
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
	s.Mu.Lock()
	v2 := s.V2
	s.Mu.Unlock()
	if v2 != nil && (r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/")) {
		s.serveV2(v2, w, r)
		return
	}
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
