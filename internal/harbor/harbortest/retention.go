package harbortest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// handleRetention serves retention policies and their runs. As in Harbor
// (src/server/v2.0/handler/retention.go), a project has at most one policy, linked by its
// metadata retention_id, with at most 15 rules.
func (s *Server) handleRetention(w http.ResponseWriter, r *http.Request, op string, params map[string]string) {
	id, _ := strconv.ParseInt(params["id"], 10, 64)
	switch op {
	case "createRetention", "updateRetention":
		var pol map[string]any
		if err := json.NewDecoder(r.Body).Decode(&pol); err != nil {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
			return
		}
		scope, _ := pol["scope"].(map[string]any)
		ref, _ := scope["ref"].(float64)
		name, proj := s.projectByID(int64(ref))
		rules, _ := pol["rules"].([]any)
		switch {
		case proj == nil:
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "the scope names no project")
			return
		case len(rules) > 15:
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "at most 15 rules")
			return
		}
		if op == "updateRetention" {
			if s.Retentions[id] == nil {
				writeError(w, http.StatusNotFound, "NOT_FOUND", "retention policy not found")
				return
			}
			pol["id"] = id
			s.Retentions[id] = pol
			w.WriteHeader(http.StatusOK)
			return
		}
		if proj.Metadata["retention_id"] != "" {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "project "+name+" already has a retention policy")
			return
		}
		id = s.nextID
		s.nextID++
		pol["id"] = id
		s.Retentions[id] = pol
		proj.Metadata["retention_id"] = strconv.FormatInt(id, 10)
		w.Header().Set("Location", fmt.Sprintf("/api/v2.0/retentions/%d", id))
		w.WriteHeader(http.StatusCreated)
	case "getRetention":
		pol := s.Retentions[id]
		if pol == nil {
			writeError(w, http.StatusNotFound, "NOT_FOUND", "retention policy not found")
			return
		}
		writeJSON(w, http.StatusOK, pol)
	case "deleteRetention":
		if s.Retentions[id] == nil {
			writeError(w, http.StatusNotFound, "NOT_FOUND", "retention policy not found")
			return
		}
		delete(s.Retentions, id)
		for _, p := range s.Projects {
			if p.Metadata["retention_id"] == strconv.FormatInt(id, 10) {
				delete(p.Metadata, "retention_id")
			}
		}
		w.WriteHeader(http.StatusOK)
	case "triggerRetentionExecution":
		var req struct {
			DryRun bool `json:"dry_run"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || s.Retentions[id] == nil {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "no such policy, or a bad body")
			return
		}
		s.RetentionRuns = append(s.RetentionRuns, RetentionRun{PolicyID: id, DryRun: req.DryRun})
		w.Header().Set("Location", fmt.Sprintf("/api/v2.0/retentions/%d/executions/%d", id, len(s.RetentionRuns)))
		w.WriteHeader(http.StatusCreated)
	default:
		writeError(w, http.StatusNotImplemented, "NOT_IMPLEMENTED", "harbortest does not serve "+op)
	}
}
