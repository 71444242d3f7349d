package harbortest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Webhook is a project's webhook policy, as posted to CreateWebhookPolicyOfProject (Harbor's
// WebhookPolicy). Its http targets are sent the project's events of EventTypes (PUSH_ARTIFACT,
// DELETE_ARTIFACT, SCANNING_COMPLETED, ...), as Harbor's notifier does
// (src/pkg/notifier/formats: default.go and cloudevents.go).
type Webhook struct {
	ID         int64
	Name       string
	Targets    []WebhookTarget
	EventTypes []string
	Enabled    bool
}

// WebhookTarget is a webhook policy's target (Harbor's WebhookTargetObject).
type WebhookTarget struct {
	Type          string `json:"type"`
	Address       string `json:"address"`
	AuthHeader    string `json:"auth_header,omitempty"`
	PayloadFormat string `json:"payload_format,omitempty"`
}

// Delivery is one webhook request the server sent: the event type, the target's address and
// payload format, and the HTTP status it got (0: no answer).
type Delivery struct {
	EventType, Address, Format string
	Status                     int
}

// createWebhook serves CreateWebhookPolicyOfProject; Harbor requires targets and event types.
func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request, proj *Project) {
	var req struct {
		Name       string          `json:"name"`
		Targets    []WebhookTarget `json:"targets"`
		EventTypes []string        `json:"event_types"`
		Enabled    bool            `json:"enabled"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Targets) == 0 || len(req.EventTypes) == 0 {
		writeError(w, http.StatusBadRequest, "BAD_REQUEST", "a webhook policy needs targets and event_types")
		return
	}
	for _, t := range req.Targets {
		if t.Type != "http" || !strings.HasPrefix(t.Address, "http") {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "a target needs type http and an http(s) address")
			return
		}
	}
	id := s.nextID
	s.nextID++
	proj.Webhooks = append(proj.Webhooks, Webhook{ID: id, Name: req.Name, Targets: req.Targets, EventTypes: req.EventTypes, Enabled: req.Enabled})
	w.Header().Set("Location", fmt.Sprintf("/api/v2.0/projects/%d/webhook/policies/%d", proj.ID, id))
	w.WriteHeader(http.StatusCreated)
}

// listWebhooks serves ListWebhookPoliciesOfProject.
func (s *Server) listWebhooks(w http.ResponseWriter, proj *Project) {
	out := []map[string]any{}
	for _, h := range proj.Webhooks {
		out = append(out, map[string]any{"id": h.ID, "name": h.Name, "project_id": proj.ID, "targets": h.Targets,
			"event_types": h.EventTypes, "enabled": h.Enabled})
	}
	w.Header().Set("X-Total-Count", fmt.Sprint(len(out)))
	writeJSON(w, http.StatusOK, out)
}

// manifestPath is /v2/<project>/<repository>/manifests/<reference>.
var manifestPath = regexp.MustCompile(`^/v2/([^/]+)/(.+)/manifests/([^/]+)$`)

// statusRecorder keeps the status and headers a /v2/ response was written with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// serveV2 passes a distribution API request to V2 and, as Harbor does, announces a manifest
// pushed (PUSH_ARTIFACT; by digest, Harbor names the digest as the tag) or deleted
// (DELETE_ARTIFACT) to the project's webhooks.
func (s *Server) serveV2(v2 http.Handler, w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	v2.ServeHTTP(rec, r)
	m := manifestPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		return
	}
	project, repo, ref := m[1], m[2], m[3]
	switch {
	case r.Method == http.MethodPut && rec.status == http.StatusCreated:
		digest := rec.Header().Get("Docker-Content-Digest")
		s.Notify("PUSH_ARTIFACT", project, repo, digest, ref)
	case r.Method == http.MethodDelete && rec.status == http.StatusAccepted && strings.HasPrefix(ref, "sha256:"):
		s.Notify("DELETE_ARTIFACT", project, repo, ref, "")
	}
}

// Notify sends eventType for project/repo@digest (tag may be empty) to every enabled webhook of
// the project that subscribes to it, in each target's payload format, with its auth header as
// Authorization. It returns once every target answered (Harbor sends from its job service, later;
// tests wait for the verdict, not for this). SCANNING_COMPLETED is what a finished scan sends.
func (s *Server) Notify(eventType, project, repo, digest, tag string) {
	s.Mu.Lock()
	p := s.Projects[project]
	var targets []struct {
		policy int64
		t      WebhookTarget
	}
	if p != nil {
		for _, h := range p.Webhooks {
			if !h.Enabled || !contains(h.EventTypes, eventType) {
				continue
			}
			for _, t := range h.Targets {
				targets = append(targets, struct {
					policy int64
					t      WebhookTarget
				}{h.ID, t})
			}
		}
	}
	var projectID int64
	if p != nil {
		projectID = p.ID
	}
	s.Mu.Unlock()
	if tag == "" && eventType != "DELETE_ARTIFACT" {
		tag = digest
	}
	now := time.Now()
	resource := map[string]any{"digest": digest, "tag": tag,
		"resource_url": strings.TrimPrefix(strings.TrimPrefix(s.URL, "http://"), "https://") + "/" + project + "/" + repo + ":" + tag}
	if eventType == "SCANNING_COMPLETED" {
		resource["scan_overview"] = map[string]any{"application/vnd.security.vulnerability.report; version=1.1": map[string]any{"scan_status": "Success"}}
	}
	data := map[string]any{"resources": []any{resource},
		"repository": map[string]any{"date_created": now.Unix(), "name": repo, "namespace": project, "repo_full_name": project + "/" + repo, "repo_type": "private"}}
	for _, tt := range targets {
		var body []byte
		contentType := "application/json"
		if tt.t.PayloadFormat == "CloudEvents" {
			id := make([]byte, 16)
			_, _ = rand.Read(id)
			body, _ = json.Marshal(map[string]any{"specversion": "1.0", "id": hex.EncodeToString(id),
				"source": fmt.Sprintf("/projects/%d/webhook/policies/%d", projectID, tt.policy), "type": cloudEventType[eventType],
				"datacontenttype": "application/json", "time": now.UTC().Format(time.RFC3339), "data": data, "operator": "admin"})
			contentType = "application/cloudevents+json"
		} else {
			body, _ = json.Marshal(map[string]any{"type": eventType, "occur_at": now.Unix(), "operator": "admin", "event_data": data})
		}
		req, err := http.NewRequest(http.MethodPost, tt.t.Address, bytes.NewReader(body))
		if err != nil {
			continue
		}
		req.Header.Set("Content-Type", contentType)
		if tt.t.AuthHeader != "" {
			req.Header.Set("Authorization", tt.t.AuthHeader)
		}
		d := Delivery{EventType: eventType, Address: tt.t.Address, Format: tt.t.PayloadFormat}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			d.Status = resp.StatusCode
			_ = resp.Body.Close()
		}
		s.Mu.Lock()
		s.Deliveries = append(s.Deliveries, d)
		s.Mu.Unlock()
	}
}

// cloudEventType maps Harbor's event types to its CloudEvents types (cloudevents.go).
var cloudEventType = map[string]string{
	"PUSH_ARTIFACT":      "harbor.artifact.pushed",
	"DELETE_ARTIFACT":    "harbor.artifact.deleted",
	"SCANNING_COMPLETED": "harbor.scan.completed",
	"SCANNING_FAILED":    "harbor.scan.failed",
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }
