package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/portcullis-dev/portcullis/internal/egress"
)

// Error kinds. Every error a Client returns wraps exactly one of them, so callers branch with
// errors.Is and never on message text.
var (
	// ErrUnauthorized: the registry refused the credentials (401, 403, or a failed token exchange).
	ErrUnauthorized = errors.New("registry refused the credentials")
	// ErrNotFound: the repository, tag or manifest does not exist (404).
	ErrNotFound = errors.New("not found in the registry")
	// ErrRateLimited: the registry kept answering 429 after Retry-After and backoff.
	ErrRateLimited = errors.New("registry rate limit")
	// ErrUnavailable: the registry could not be reached or answered 5xx.
	ErrUnavailable = errors.New("registry unavailable")
	// ErrTimeout: the pass's deadline passed.
	ErrTimeout = errors.New("registry request timed out")
	// ErrInvalidResponse: the registry answered something that breaks the distribution spec (bad
	// JSON, a digest that does not match the content, endless paging, an unexpected status).
	ErrInvalidResponse = errors.New("invalid registry response")
	// ErrTooLarge: a response body was over the size limit (4 MiB, the distribution spec's
	// recommended manifest limit).
	ErrTooLarge = errors.New("registry response too large")
	// ErrUnsupported: the registry does not offer the operation (405 Method Not Allowed or
	// UNSUPPORTED), e.g. manifest deletion switched off in CNCF Distribution.
	ErrUnsupported = errors.New("registry does not support the operation")
	// ErrNotAllowed: the manager's egress policy refused the address a request would connect to
	// (Config.Egress): spec.url, a token realm or a redirect target.
	ErrNotAllowed = egress.ErrNotAllowed
)

// classify wraps err with its kind. op says what was being done ("listing tags of team-a/api").
// Messages never carry credentials: go-containerregistry puts none in its errors, and request URLs
// hold no secrets.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	kind := kindOf(err)
	if errors.Is(err, kind) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, kind, err)
}

func kindOf(err error) error {
	for _, k := range []error{ErrNotAllowed, ErrUnauthorized, ErrNotFound, ErrRateLimited, ErrUnavailable, ErrTimeout, ErrInvalidResponse, ErrTooLarge, ErrUnsupported} {
		if errors.Is(err, k) {
			return k
		}
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch code := terr.StatusCode; {
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return ErrUnauthorized
		case code == http.StatusNotFound && contentNotFound(terr):
			return ErrNotFound
		case code == http.StatusNotFound:
			// A 404 from the /v2/ ping, a token endpoint or a proxy in front says nothing about the
			// repository: treating it as "gone" would delete its images.
			return ErrUnavailable
		case code == http.StatusTooManyRequests:
			return ErrRateLimited
		case code == http.StatusMethodNotAllowed:
			return ErrUnsupported
		case code >= 500:
			return ErrUnavailable
		default:
			return ErrInvalidResponse
		}
	}
	// encoding/json built with GOEXPERIMENT=jsonv2 reports a failed body read as "jsontext: read
	// error: ..." without wrapping it, so the read's own error is found by its message.
	switch msg := err.Error(); {
	case strings.Contains(msg, ErrTooLarge.Error()):
		return ErrTooLarge
	case strings.Contains(msg, context.DeadlineExceeded.Error()), strings.Contains(msg, context.Canceled.Error()),
		strings.Contains(msg, errBodyStalled.Error()):
		return ErrTimeout
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return ErrTimeout
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return ErrTimeout
	}
	var unknownCA x509.UnknownAuthorityError
	var invalidCert x509.CertificateInvalidError
	var hostname x509.HostnameError
	var tlsRecord tls.RecordHeaderError
	if errors.As(err, &unknownCA) || errors.As(err, &invalidCert) || errors.As(err, &hostname) || errors.As(err, &tlsRecord) {
		return ErrUnavailable // TLS: the registry cannot be trusted or spoken to; the message says why
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syn) || errors.As(err, &typ) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrInvalidResponse
	}
	var operr *net.OpError
	if errors.As(err, &operr) || errors.Is(err, io.EOF) {
		return ErrUnavailable
	}
	return ErrInvalidResponse
}

// contentNotFound reports whether a 404 is the distribution API saying that a repository, tag or
// manifest does not exist: from the tags or manifests endpoint, with NAME_UNKNOWN or MANIFEST_UNKNOWN
// (or no error body, which some registries send).
func contentNotFound(terr *transport.Error) bool {
	if terr.Request == nil || terr.Request.URL == nil {
		return false
	}
	p := terr.Request.URL.Path
	if !strings.HasSuffix(p, "/tags/list") && !strings.Contains(p, "/manifests/") {
		return false
	}
	if len(terr.Errors) == 0 {
		return true
	}
	for _, d := range terr.Errors {
		if d.Code == transport.NameUnknownErrorCode || d.Code == transport.ManifestUnknownErrorCode {
			return true
		}
	}
	return false
}

// Sanitize describes err, an error from an operation made with RemoteOptions (a push through
// another library), by its kind alone and the HTTP status when there is one: what a condition or
// event may show of an upstream failure, never the registry's response body. An egress refusal keeps
// its own message (it names the address and the rule, nothing the server sent).
func Sanitize(op string, err error) error {
	if err == nil {
		return nil
	}
	kind := kindOf(err)
	if kind == ErrNotAllowed || kind == ErrTimeout {
		return classify(op, err)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return fmt.Errorf("%s: %w (HTTP %d)", op, kind, terr.StatusCode)
	}
	return fmt.Errorf("%s: %w", op, kind)
}
