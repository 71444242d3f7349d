package harbor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/go-openapi/runtime"
	"github.com/goharbor/go-client/pkg/sdk/v2.0/models"
)

// Error kinds. Every error a Client returns wraps exactly one of them, so callers branch with
// errors.Is. They follow Harbor's status codes (api/v2.0/swagger.yaml: 401, 403, 404, 409, 412, 429,
// 5xx) and its error body {"errors":[{"code","message"}]}, whose codes (not its messages) are kept in
// the error text.
var (
	// ErrUnauthorized: the credentials were refused (401).
	ErrUnauthorized = errors.New("harbor refused the credentials")
	// ErrForbidden: the account may not do this (403), e.g. a project robot managing members.
	ErrForbidden = errors.New("harbor forbids the operation")
	// ErrNotFound: the project, member, robot or rule does not exist (404).
	ErrNotFound = errors.New("not found in harbor")
	// ErrConflict: it exists already, or changed under us (409, 412).
	ErrConflict = errors.New("harbor reports a conflict")
	// ErrRateLimited: 429.
	ErrRateLimited = errors.New("harbor rate limit")
	// ErrUnsupported: this Harbor does not offer the operation (405, 501, or a 404 for a whole API).
	ErrUnsupported = errors.New("harbor does not support the operation")
	// ErrUnavailable: Harbor could not be reached or answered 5xx.
	ErrUnavailable = errors.New("harbor unavailable")
	// ErrInvalidResponse: anything else (a status the API does not define, a body that does not parse).
	ErrInvalidResponse = errors.New("invalid harbor response")
)

// coded is what go-swagger's typed responses offer.
type coded interface{ IsCode(int) bool }

// payloadErrors is implemented by typed error responses that carry Harbor's error body.
type payloadErrors interface{ GetPayload() *models.Errors }

// classify wraps err with its kind; op says what was being done ("reading project team-a").
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	kind, detail := kindOf(err)
	if detail != "" {
		return fmt.Errorf("%s: %w: %s", op, kind, detail)
	}
	return fmt.Errorf("%s: %w: %w", op, kind, err)
}

func kindOf(err error) (error, string) {
	var api *runtime.APIError
	if errors.As(err, &api) {
		return byStatus(api.Code), fmt.Sprintf("HTTP %d", api.Code)
	}
	var c coded
	if errors.As(err, &c) {
		detail := ""
		var p payloadErrors
		if errors.As(err, &p) && p.GetPayload() != nil {
			var msgs []string
			for _, e := range p.GetPayload().Errors {
				// Harbor's code only: its message is the server's text, which never reaches a
				// condition, event or log.
				if e != nil && harborCode(e.Code) && len(msgs) < 8 {
					msgs = append(msgs, e.Code)
				}
			}
			detail = strings.Join(msgs, "; ")
		}
		for _, code := range []int{401, 403, 404, 405, 409, 412, 429, 500, 501, 502, 503, 504} {
			if c.IsCode(code) {
				if detail == "" {
					detail = fmt.Sprintf("HTTP %d", code)
				}
				return byStatus(code), detail
			}
		}
		return ErrInvalidResponse, detail
	}
	var nerr net.Error
	if errors.As(err, &nerr) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return ErrUnavailable, ""
	}
	var operr *net.OpError
	if errors.As(err, &operr) {
		return ErrUnavailable, ""
	}
	return ErrInvalidResponse, ""
}

func byStatus(code int) error {
	switch {
	case code == 401:
		return ErrUnauthorized
	case code == 403:
		return ErrForbidden
	case code == 404:
		return ErrNotFound
	case code == 405 || code == 501:
		return ErrUnsupported
	case code == 409 || code == 412:
		return ErrConflict
	case code == 429:
		return ErrRateLimited
	case code >= 500:
		return ErrUnavailable
	}
	return ErrInvalidResponse
}

// harborCode reports whether s looks like a Harbor error code (upper-case letters, digits and
// underscores, as CONFLICT or UNAUTHORIZED).
func harborCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
