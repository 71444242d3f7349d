package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFaults injects the failures a registry can produce in front of a working registry and checks
// that each gives its typed error (never a panic), and how often the request was sent.
func TestFaults(t *testing.T) {
	tagsPath := "/v2/app/tags/list"
	cases := []struct {
		name      string
		fault     func(w http.ResponseWriter, r *http.Request) bool
		cfg       func(*Config)
		call      func(context.Context, *Client) error
		want      error
		stalled   bool // the error says the stall timeout cut the body
		wantSends int  // requests to tagsPath; 0: not checked
	}{
		{
			name: "500 is not retried",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"boom"}]}`, http.StatusInternalServerError)
			}),
			want: ErrUnavailable, wantSends: 1,
		},
		{
			name: "503 without Retry-After is retried with backoff, then fails",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
			}),
			want: ErrUnavailable, wantSends: 1 + DefaultMaxRetries,
		},
		{
			name: "429 forever is ErrRateLimited after the retries",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusTooManyRequests)
			}),
			cfg:  func(c *Config) { c.MaxRetries = 2 },
			want: ErrRateLimited, wantSends: 3,
		},
		{
			name: "429 with a Retry-After beyond the longest wait fails at once",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusTooManyRequests)
			}),
			want: ErrRateLimited, wantSends: 1,
		},
		{
			name: "401",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}`, http.StatusUnauthorized)
			}),
			want: ErrUnauthorized,
		},
		{
			name:  "bad JSON",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"name":"app","tags":[`) }),
			want:  ErrInvalidResponse,
		},
		{
			name: "tags of the wrong type",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"name":"app","tags":"v1"}`)
			}),
			want: ErrInvalidResponse,
		},
		{
			name: "endless paging with a repeated link",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", `</v2/app/tags/list?n=1&last=a>; rel="next"`)
				fmt.Fprint(w, `{"name":"app","tags":["a"]}`)
			}),
			want: ErrInvalidResponse, wantSends: 2,
		},
		{
			name: "endless paging with new links",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				next := r.URL.Query().Get("last") + "x"
				w.Header().Set("Link", fmt.Sprintf(`</v2/app/tags/list?n=1&last=%s>; rel="next"`, next))
				fmt.Fprintf(w, `{"name":"app","tags":[%q]}`, next)
			}),
			cfg:  func(c *Config) { c.MaxPages = 5 },
			want: ErrInvalidResponse, wantSends: 5,
		},
		{
			name: "oversize body with Content-Length",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				body := `{"name":"app","tags":["` + strings.Repeat("a", 2048) + `"]}`
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				fmt.Fprint(w, body)
			}),
			cfg:  func(c *Config) { c.MaxBody = 1024 },
			want: ErrTooLarge,
		},
		{
			name: "oversize body streamed without Content-Length",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"name":"app","tags":["`)
				for range 64 {
					fmt.Fprint(w, strings.Repeat("a", 1024))
					w.(http.Flusher).Flush()
				}
				fmt.Fprint(w, `"]}`)
			}),
			cfg:  func(c *Config) { c.MaxBody = 4096 },
			want: ErrTooLarge,
		},
		{
			name: "slow body hits the pass deadline",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"name":"app","tags":[`)
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}),
			want: ErrTimeout,
		},
		{
			name: "body that stops sending is cut by the stall timeout, long before the deadline",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"name":"app","tags":[`)
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}),
			cfg:  func(c *Config) { c.BodyStallTimeout = 100 * time.Millisecond },
			want: ErrTimeout, stalled: true,
		},
		{
			name: "slow but steady body is not cut: only a pause longer than the stall timeout is",
			fault: onPath(tagsPath, func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"name":"app","tags":["v1"`)
				for i := range 8 {
					w.(http.Flusher).Flush()
					time.Sleep(50 * time.Millisecond) // 400 ms in all, each pause a third of the timeout
					fmt.Fprintf(w, `,"s%d"`, i)
				}
				fmt.Fprint(w, `]}`)
			}),
			cfg:  func(c *Config) { c.BodyStallTimeout = 150 * time.Millisecond },
			want: nil,
		},
		{
			name: "oversize manifest",
			fault: func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasPrefix(r.URL.Path, "/v2/app/manifests/") {
					return false
				}
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				if r.Method == http.MethodHead { // no digest: forces the GET
					w.Header().Set("Content-Length", fmt.Sprint(5<<20))
					return true
				}
				fmt.Fprint(w, `{"schemaVersion":2,"layers":[`+strings.Repeat(`{},`, 2<<20)+`{}]}`)
				return true
			},
			call: func(ctx context.Context, c *Client) error { _, err := c.Resolve(ctx, "app", "v1"); return err },
			want: ErrTooLarge,
		},
		{
			name: "index whose body does not match its digest",
			fault: func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasPrefix(r.URL.Path, "/v2/app/manifests/sha256:") {
					return false
				}
				w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
				fmt.Fprint(w, `{"schemaVersion":2,"manifests":[]}`)
				return true
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Platforms(ctx, "app", "sha256:"+strings.Repeat("0", 64))
				return err
			},
			want: ErrInvalidResponse,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFaultServer(t)
			fs.push(t, "app", "v1", randomImage(t))
			fs.setFault(tc.fault)
			cfgs := []func(*Config){}
			if tc.cfg != nil {
				cfgs = append(cfgs, tc.cfg)
			}
			c := fs.client(t, cfgs...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			call := tc.call
			if call == nil {
				call = func(ctx context.Context, c *Client) error { _, err := c.Tags(ctx, "app"); return err }
			}
			err := call(ctx, c)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			// Said by message: encoding/json built with GOEXPERIMENT=jsonv2 does not wrap a read error.
			if tc.stalled != strings.Contains(fmt.Sprint(err), errBodyStalled.Error()) {
				t.Fatalf("error %v: want the stall timeout's reason %v", err, tc.stalled)
			}
			if tc.wantSends > 0 {
				if got := fs.count("GET " + tagsPath); got != tc.wantSends {
					t.Fatalf("sent %d requests, want %d", got, tc.wantSends)
				}
			}
		})
	}
}

// TestRetryAfterIsHonoured: a 429 with Retry-After: 1 is retried after at least a second, and the
// retry succeeds.
func TestRetryAfterIsHonoured(t *testing.T) {
	fs := newFaultServer(t)
	fs.push(t, "app", "v1", randomImage(t))
	first := true
	fs.setFault(onPath("/v2/app/tags/list", func(w http.ResponseWriter, r *http.Request) {
		if first {
			first = false
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		fmt.Fprint(w, `{"name":"app","tags":["v1"]}`)
	}))
	start := time.Now()
	tags, err := fs.client(t).Tags(context.Background(), "app")
	if err != nil || len(tags) != 1 {
		t.Fatalf("Tags = %v, %v", tags, err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %s, before the Retry-After of 1s", waited)
	}
	if got := fs.count("GET /v2/app/tags/list"); got != 2 {
		t.Fatalf("want 2 requests, got %d", got)
	}
}

// TestCatalogPaging: the catalog is read page by page (`n`, `last`, and the Link header, as
// CNCF Distribution pages it).
func TestCatalogPaging(t *testing.T) {
	fs := newFaultServer(t)
	all := []string{"a", "b", "c", "d", "e", "f", "g"}
	fs.setFault(onPath("/v2/_catalog", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		last := r.URL.Query().Get("last")
		start := sort.SearchStrings(all, last)
		if last != "" {
			start++
		}
		end := min(start+n, len(all))
		if end < len(all) {
			w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?last=%s&n=%d>; rel="next"`, all[end-1], n))
		}
		_ = json.NewEncoder(w).Encode(map[string][]string{"repositories": all[start:end]})
	}))
	repos, err := fs.client(t, func(c *Config) { c.PageSize = 3 }).Repositories(context.Background())
	if err != nil || len(repos) != 7 {
		t.Fatalf("Repositories = %v, %v", repos, err)
	}
	if got := fs.count("GET /v2/_catalog"); got != 3 {
		t.Fatalf("want 3 catalog pages of 3, got %d requests", got)
	}
}

// TestBasicAndBearerAuth: credentials go where the registry's challenge says, a wrong password is
// ErrUnauthorized, and the bearer token is fetched once and reused.
func TestBasicAndBearerAuth(t *testing.T) {
	fs := newFaultServer(t)
	fs.push(t, "app", "v1", randomImage(t))
	fs.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			if u, p, ok := r.BasicAuth(); !ok || u != "robot" || p != "right" {
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
				return true
			}
			fmt.Fprint(w, `{"token":"tok-123","expires_in":300}`)
			return true
		}
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"`, fs.URL))
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return true
		}
		return false
	})
	ctx := context.Background()
	bad := fs.client(t, func(c *Config) { c.Auth = basic("robot", "wrong") })
	if _, err := bad.Tags(ctx, "app"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong password: %v, want ErrUnauthorized", err)
	} else if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error leaks the password: %v", err)
	}
	good := fs.client(t, func(c *Config) { c.Auth = basic("robot", "right") })
	before := fs.count("GET /token")
	for range 3 {
		if _, err := good.Tags(ctx, "app"); err != nil {
			t.Fatal(err)
		}
		if _, err := good.Resolve(ctx, "app", "v1"); err != nil {
			t.Fatal(err)
		}
	}
	if got := fs.count("GET /token") - before; got != 1 {
		t.Fatalf("want one token exchange for the repository, got %d", got)
	}
}

func onPath(path string, h http.HandlerFunc) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != path {
			return false
		}
		h(w, r)
		return true
	}
}

// TestRecoversAfterSetupFailure: go-containerregistry keeps a failed repository set-up (ping, token)
// for good; the Client must drop it so the same Client works once the registry is back.
func TestRecoversAfterSetupFailure(t *testing.T) {
	fs := newFaultServer(t)
	fs.push(t, "app", "v1", randomImage(t))
	fs.setFault(onPath("/v2/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	c := fs.client(t, func(c *Config) { c.MaxRetries = 1 })
	ctx := context.Background()
	if _, err := c.Tags(ctx, "app"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("while down: %v, want ErrUnavailable", err)
	}
	fs.setFault(nil)
	if tags, err := c.Tags(ctx, "app"); err != nil || len(tags) != 1 {
		t.Fatalf("after recovery: %v, %v", tags, err)
	}
}

// TestNotFoundOnlyFromContent: a 404 says "gone" only when the tags or manifests endpoint says so; a
// 404 from the ping (a proxy, a wrong path) is ErrUnavailable, so nothing is deleted for it.
func TestNotFoundOnlyFromContent(t *testing.T) {
	fs := newFaultServer(t)
	fs.push(t, "app", "v1", randomImage(t))
	fs.setFault(onPath("/v2/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }))
	if _, err := fs.client(t).Tags(context.Background(), "app"); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
		t.Fatalf("404 on the ping: %v, want ErrUnavailable", err)
	}
}

// TestRetryAfterPastDeadline: a Retry-After longer than the pass has left fails at once as a rate
// limit, instead of sleeping into a timeout.
func TestRetryAfterPastDeadline(t *testing.T) {
	fs := newFaultServer(t)
	fs.push(t, "app", "v1", randomImage(t))
	fs.setFault(onPath("/v2/app/tags/list", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "20")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := fs.client(t, func(c *Config) { c.MaxRetryWait = time.Minute }).Tags(ctx, "app")
	if !errors.Is(err, ErrRateLimited) || time.Since(start) > time.Second {
		t.Fatalf("error %v after %s, want ErrRateLimited at once", err, time.Since(start))
	}
}

// TestStatusBeforeMessage: a 401 whose body happens to say "context canceled" is still
// ErrUnauthorized.
func TestStatusBeforeMessage(t *testing.T) {
	fs := newFaultServer(t)
	fs.push(t, "app", "v1", randomImage(t))
	fs.setFault(onPath("/v2/app/tags/list", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"context canceled"}]}`, http.StatusUnauthorized)
	}))
	if _, err := fs.client(t).Tags(context.Background(), "app"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("error %v, want ErrUnauthorized", err)
	}
}

// TestErrorBodiesWithheld: what a registry writes in an error response never reaches an error
// message (and so no condition, event or log): only its error codes and the HTTP status are kept.
func TestErrorBodiesWithheld(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		want       error
		keep       string
	}{
		{"JSON errors", `{"errors":[{"code":"UNAUTHORIZED","message":"secret-a","detail":"secret-b"}]}`, http.StatusUnauthorized, ErrUnauthorized, "UNAUTHORIZED"},
		{"an HTML page", `<html>secret-a: internal host 10.0.0.7 secret-b</html>`, http.StatusInternalServerError, ErrUnavailable, "500"},
		{"a code that is not a code", `{"errors":[{"code":"secret-a","message":"secret-b"}]}`, http.StatusBadGateway, ErrUnavailable, "502"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFaultServer(t)
			fs.push(t, "app", "v1", randomImage(t))
			fs.setFault(onPath("/v2/app/tags/list", func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, tc.body, tc.code)
			}))
			_, err := fs.client(t).Tags(context.Background(), "app")
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if msg := err.Error(); strings.Contains(msg, "secret") || !strings.Contains(msg, tc.keep) {
				t.Fatalf("error %q: want the registry's text withheld and %q kept", msg, tc.keep)
			}
		})
	}
}
