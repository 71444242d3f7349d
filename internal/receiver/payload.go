// Package receiver turns registry notifications into verdicts at push time: a Registry with
// spec.notifications gets an endpoint on the manager that CNCF Distribution (notifications
// endpoints), Harbor (webhooks, Default or CloudEvents payloads) or anything else (a small generic
// payload, HMAC-signed) calls on push and delete. An event is a hint, never trusted: the image it
// names is checked against the registry before anything is written. Parse is pure and
// table-tested; Handler is the thin edge (authentication, limits, status).
package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// Action is what an event asks for.
type Action string

const (
	// Push: an image was pushed (or tagged): evaluate it now.
	Push Action = "push"
	// Delete: a manifest or tag was deleted: check it against the registry and forget what is gone.
	Delete Action = "delete"
	// LookAgain: something happened to a known image (a Harbor scan event): reconcile it again.
	LookAgain Action = "look-again"
)

// Event is one image event of a delivery.
type Event struct {
	Action     Action
	Repository string
	// Tag and Digest name the image; either may be empty (never both).
	Tag, Digest string
}

// Format names a payload format.
type Format string

const (
	FormatDistribution Format = "distribution"
	FormatHarbor       Format = "harbor"
	FormatCloudEvents  Format = "harbor-cloudevents"
	FormatGeneric      Format = "generic"
)

// ErrMalformed wraps every payload that cannot be read; the receiver answers 400 with its message
// (which names the field, never echoes the body).
var ErrMalformed = errors.New("malformed notification")

// maxEvents bounds the events one delivery may carry.
const maxEvents = 1000

// Parse reads one delivery: its format from the headers (Distribution's envelope media type, a
// CloudEvents content type or ce-type header) or the body's shape (Harbor's "type" and
// "event_data", the generic "repository"), and its image events. Events that concern no image
// (pulls, blob pushes, quota and replication notices) are dropped; an empty result is not an error.
func Parse(h http.Header, body []byte) (Format, []Event, error) {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch {
	case mt == "application/vnd.docker.distribution.events.v1+json" || mt == "application/vnd.docker.distribution.events.v2+json":
		ev, err := parseDistribution(body)
		return FormatDistribution, ev, err
	case mt == "application/cloudevents+json":
		var ce struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &ce); err != nil {
			return FormatCloudEvents, nil, fmt.Errorf("%w: CloudEvents envelope: %s", ErrMalformed, jsonProblem(err))
		}
		ev, err := parseHarborData(cloudEventAction(ce.Type), ce.Data)
		return FormatCloudEvents, ev, err
	case h.Get("Ce-Type") != "": // CloudEvents binary mode: attributes in headers, data is the body
		ev, err := parseHarborData(cloudEventAction(h.Get("Ce-Type")), body)
		return FormatCloudEvents, ev, err
	}
	var probe struct {
		Events    json.RawMessage `json:"events"`
		Type      string          `json:"type"`
		EventData json.RawMessage `json:"event_data"`
		Repo      *string         `json:"repository"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return "", nil, fmt.Errorf("%w: %s", ErrMalformed, jsonProblem(err))
	}
	switch {
	case probe.Events != nil:
		ev, err := parseDistribution(body)
		return FormatDistribution, ev, err
	case probe.Type != "" && probe.EventData != nil:
		ev, err := parseHarborData(harborAction(probe.Type), probe.EventData)
		return FormatHarbor, ev, err
	case probe.Repo != nil:
		ev, err := parseGeneric(body)
		return FormatGeneric, ev, err
	}
	return "", nil, fmt.Errorf("%w: not a Distribution envelope, a Harbor webhook or a generic payload (repository, tag or digest)", ErrMalformed)
}

// parseDistribution reads CNCF Distribution's notification envelope (docs: "Notifications",
// "Envelope" and "Events"): manifest pushes and deletes; blob events and pulls are dropped.
func parseDistribution(body []byte) ([]Event, error) {
	var env struct {
		Events []struct {
			Action string `json:"action"`
			Target struct {
				MediaType  string `json:"mediaType"`
				Digest     string `json:"digest"`
				Repository string `json:"repository"`
				Tag        string `json:"tag"`
			} `json:"target"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%w: Distribution envelope: %s", ErrMalformed, jsonProblem(err))
	}
	if len(env.Events) > maxEvents {
		return nil, fmt.Errorf("%w: %d events in one delivery (at most %d)", ErrMalformed, len(env.Events), maxEvents)
	}
	var out []Event
	for _, e := range env.Events {
		t := e.Target
		var a Action
		switch e.Action {
		case "push":
			if !isManifestType(t.MediaType) {
				continue // a layer or config blob
			}
			a = Push
		case "delete":
			// A manifest or tag delete names no media type; a blob delete names a digest with no
			// tag, and the check against the registry tells the two apart.
			a = Delete
		default:
			continue
		}
		ev, err := event(a, t.Repository, t.Tag, t.Digest)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// harborAction maps Harbor's default payload types (src/pkg/notifier/formats/default.go) to actions.
func harborAction(t string) Action {
	switch t {
	case "PUSH_ARTIFACT":
		return Push
	case "DELETE_ARTIFACT":
		return Delete
	case "SCANNING_COMPLETED", "SCANNING_FAILED", "SCANNING_STOPPED":
		return LookAgain
	}
	return ""
}

// cloudEventAction maps Harbor's CloudEvents types (src/pkg/notifier/formats/cloudevents.go).
func cloudEventAction(t string) Action {
	switch t {
	case "harbor.artifact.pushed", "harbor.tag.created":
		return Push
	case "harbor.artifact.deleted":
		return Delete
	case "harbor.scan.completed", "harbor.scan.failed", "harbor.scan.stopped":
		return LookAgain
	}
	return ""
}

// parseHarborData reads the event_data of a Harbor webhook (the same object in both formats):
// resources (digest, tag) in repository.repo_full_name. Harbor writes the digest as the tag of an
// artifact pushed by digest.
func parseHarborData(a Action, data []byte) ([]Event, error) {
	if a == "" {
		return nil, nil // pulls, quota, replication, retention: no image to judge
	}
	var d struct {
		Resources []struct {
			Digest string `json:"digest"`
			Tag    string `json:"tag"`
		} `json:"resources"`
		Repository struct {
			FullName string `json:"repo_full_name"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%w: Harbor event data: %s", ErrMalformed, jsonProblem(err))
	}
	if len(d.Resources) > maxEvents {
		return nil, fmt.Errorf("%w: %d resources in one delivery (at most %d)", ErrMalformed, len(d.Resources), maxEvents)
	}
	var out []Event
	for _, r := range d.Resources {
		tag := r.Tag
		if tag == r.Digest || strings.HasPrefix(tag, "sha256:") {
			tag = ""
		}
		ev, err := event(a, d.Repository.FullName, tag, r.Digest)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// parseGeneric reads {"repository": ..., "tag": ..., "digest": ..., "action": "push"|"delete"}
// (action defaults to push).
func parseGeneric(body []byte) ([]Event, error) {
	var g struct {
		Action     string `json:"action"`
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
		Digest     string `json:"digest"`
	}
	if err := json.Unmarshal(body, &g); err != nil {
		return nil, fmt.Errorf("%w: generic payload: %s", ErrMalformed, jsonProblem(err))
	}
	a := Push
	switch g.Action {
	case "", "push":
	case "delete":
		a = Delete
	default:
		return nil, fmt.Errorf("%w: action %q (push or delete)", ErrMalformed, truncate(g.Action, 32))
	}
	ev, err := event(a, g.Repository, g.Tag, g.Digest)
	if err != nil {
		return nil, err
	}
	return []Event{ev}, nil
}

// event checks the names an event carries before anything uses them.
func event(a Action, repo, tag, digest string) (Event, error) {
	switch {
	case repo == "" || len(repo) > 255 || !repoName.MatchString(repo):
		return Event{}, fmt.Errorf("%w: repository %q is not a repository name", ErrMalformed, truncate(repo, 64))
	case tag == "" && digest == "":
		return Event{}, fmt.Errorf("%w: an event for %s names neither a tag nor a digest", ErrMalformed, repo)
	case tag != "" && !tagName.MatchString(tag):
		return Event{}, fmt.Errorf("%w: tag %q is not a tag", ErrMalformed, truncate(tag, 64))
	case digest != "" && !digestName.MatchString(digest):
		return Event{}, fmt.Errorf("%w: %q is not a sha256 digest", ErrMalformed, truncate(digest, 80))
	}
	return Event{Action: a, Repository: repo, Tag: tag, Digest: digest}, nil
}

func isManifestType(mt string) bool {
	return strings.Contains(mt, "manifest") || strings.Contains(mt, "image.index")
}

// jsonProblem says what is wrong with a body without quoting it.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	}
	return "invalid JSON"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
