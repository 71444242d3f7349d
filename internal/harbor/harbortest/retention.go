package harbortest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
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
		s.RetentionRuns = append(s.RetentionRuns, RetentionRun{PolicyID: id, DryRun: req.DryRun, Tasks: s.evaluate(s.Retentions[id])})
		w.Header().Set("Location", fmt.Sprintf("/api/v2.0/retentions/%d/executions/%d", id, len(s.RetentionRuns)))
		w.WriteHeader(http.StatusCreated)
	case "listRetentionExecutions":
		out := []map[string]any{}
		for i := len(s.RetentionRuns) - 1; i >= 0; i-- { // newest first, as Harbor lists them
			if run := s.RetentionRuns[i]; run.PolicyID == id {
				out = append(out, map[string]any{"id": i + 1, "policy_id": id, "status": "Succeed", "trigger": "MANUAL", "dry_run": run.DryRun,
					"start_time": time.Now().UTC().Format(time.RFC3339)})
			}
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(len(out)))
		writeJSON(w, http.StatusOK, out)
	case "listRetentionTasks":
		eid, _ := strconv.Atoi(params["eid"])
		if eid < 1 || eid > len(s.RetentionRuns) || s.RetentionRuns[eid-1].PolicyID != id {
			writeError(w, http.StatusNotFound, "NOT_FOUND", "execution not found")
			return
		}
		out := []map[string]any{}
		for i, t := range s.RetentionRuns[eid-1].Tasks {
			out = append(out, map[string]any{"id": i + 1, "execution_id": eid, "repository": t.Repository, "status": "Succeed", "status_code": 3,
				"total": t.Total, "retained": t.Retained})
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(len(out)))
		writeJSON(w, http.StatusOK, out)
	default:
		writeError(w, http.StatusNotImplemented, "NOT_IMPLEMENTED", "harbortest does not serve "+op)
	}
}

// evaluate applies a stored retention policy to its project's artifacts the way Harbor's retention
// job does for the templates Portcullis uses: per repository matched by some rule, the artifacts
// any rule keeps are retained (latestPushedK: the K most recently pushed of those whose tags the
// selector matches or excludes, plus untagged ones with extras untagged; nDaysSinceLastPush: those
// pushed within N days; always: all).
func (s *Server) evaluate(pol map[string]any) []RetentionTask {
	raw, _ := json.Marshal(pol)
	var p struct {
		Scope struct{ Ref int64 }
		Rules []struct {
			Template       string
			Params         map[string]float64
			TagSelectors   []struct{ Decoration, Pattern, Extras string } `json:"tag_selectors"`
			ScopeSelectors map[string][]struct{ Pattern string }          `json:"scope_selectors"`
		}
	}
	if json.Unmarshal(raw, &p) != nil {
		return nil
	}
	_, proj := s.projectByID(p.Scope.Ref)
	if proj == nil {
		return nil
	}
	var tasks []RetentionTask
	for _, repo := range sortedKeys(proj.Repositories) {
		arts := proj.Repositories[repo]
		kept, matchedRepo := map[int]bool{}, false
		for _, r := range p.Rules {
			if len(r.TagSelectors) != 1 || len(r.ScopeSelectors["repository"]) != 1 {
				continue
			}
			if ok, _ := doublestar.Match(r.ScopeSelectors["repository"][0].Pattern, repo); !ok {
				continue
			}
			matchedRepo = true
			sel := r.TagSelectors[0]
			var cands []int
			for i, a := range arts {
				match := len(a.Tags) == 0 && strings.Contains(sel.Extras, `"untagged":true`)
				for _, t := range a.Tags {
					ok, _ := doublestar.Match(sel.Pattern, t)
					if ok == (sel.Decoration == "matches") {
						match = true
					}
				}
				if match {
					cands = append(cands, i)
				}
			}
			sort.SliceStable(cands, func(x, y int) bool { return arts[cands[x]].PushTime.After(arts[cands[y]].PushTime) })
			n := int(r.Params[r.Template])
			for rank, i := range cands {
				switch r.Template {
				case "latestPushedK":
					kept[i] = kept[i] || rank < n
				case "nDaysSinceLastPush":
					kept[i] = kept[i] || time.Since(arts[i].PushTime) <= time.Duration(n)*24*time.Hour
				case "always":
					kept[i] = true
				}
			}
		}
		if matchedRepo {
			retained := 0
			for _, k := range kept {
				if k {
					retained++
				}
			}
			tasks = append(tasks, RetentionTask{Repository: repo, Total: len(arts), Retained: retained})
		}
	}
	return tasks
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
