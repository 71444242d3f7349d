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

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// catalogOf serves a sorted catalog the way CNCF Distribution does (`n`, `last`, Link); with
// ignoreLast it always starts from the beginning (a registry that knows only its own Link tokens).
func catalogOf(all []string, ignoreLast bool) func(http.ResponseWriter, *http.Request) bool {
	return onPath("/v2/_catalog", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		last := r.URL.Query().Get("last")
		if tok := r.URL.Query().Get("tok"); tok != "" {
			last = tok
		} else if ignoreLast {
			last = ""
		}
		start := sort.SearchStrings(all, last)
		if last != "" && start < len(all) && all[start] == last {
			start++
		}
		end := min(start+n, len(all))
		if end < len(all) {
			w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?tok=%s&n=%d>; rel="next"`, all[end-1], n))
		}
		_ = json.NewEncoder(w).Encode(map[string][]string{"repositories": all[start:end]})
	})
}

// TestRepositoryPages: pages reach the caller one at a time; a resumed listing asks for the names
// after `after` and reads nothing before it; a registry that ignores `last` is listed from the start.
func TestRepositoryPages(t *testing.T) {
	all := []string{"a", "b", "c", "d", "e", "f", "g"}
	for _, tc := range []struct {
		name       string
		ignoreLast bool
		after      string
		want       string
		pages      int
	}{
		{name: "from the start", want: "a,b,c|d,e,f|g", pages: 3},
		{name: "resumed after c", after: "c", want: "d,e,f|g", pages: 2},
		{name: "resumed after the last", after: "g", want: "", pages: 1},
		{name: "last ignored: from the start", ignoreLast: true, after: "c", want: "a,b,c|d,e,f|g", pages: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFaultServer(t)
			fs.setFault(catalogOf(all, tc.ignoreLast))
			var got []string
			err := fs.client(t, func(c *Config) { c.PageSize = 3 }).RepositoryPages(context.Background(), tc.after, func(p []string) error {
				got = append(got, strings.Join(p, ","))
				return nil
			})
			if err != nil || strings.Join(got, "|") != tc.want {
				t.Fatalf("pages %q, %v; want %q", got, err, tc.want)
			}
			if n := fs.count("GET /v2/_catalog"); n != tc.pages {
				t.Fatalf("%d catalog requests, want %d", n, tc.pages)
			}
		})
	}
}

// TestRepositoryPagesGuards: whatever the paging does, the listing ends and never gives a name
// twice. A page of nothing new fails (it may be cut short); an error from the caller stops it.
func TestRepositoryPagesGuards(t *testing.T) {
	fs := newFaultServer(t)
	calls := 0
	fs.setFault(onPath("/v2/_catalog", func(w http.ResponseWriter, r *http.Request) {
		calls++
		// Each page repeats the one before and adds one name, with a new link every time.
		w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?page=%d>; rel="next"`, calls))
		names := []string{"a", "b"}
		if calls < 4 {
			names = append(names, fmt.Sprintf("n%d", calls))
		}
		_ = json.NewEncoder(w).Encode(map[string][]string{"repositories": names})
	}))
	var got []string
	err := fs.client(t).RepositoryPages(context.Background(), "", func(p []string) error {
		got = append(got, p...)
		return nil
	})
	if !errors.Is(err, ErrInvalidResponse) || strings.Join(got, ",") != "a,b,n1,n2,n3" || calls != 4 {
		t.Fatalf("got %v after %d requests, err %v", got, calls, err)
	}
	stop := errors.New("stop")
	if err := fs.client(t).RepositoryPages(context.Background(), "", func([]string) error { return stop }); err != stop {
		t.Fatalf("the caller's error must come back as it is: %v", err)
	}
}

// TestRemoteOptionsShareThePuller: verifications made through RemoteOptions reuse the Client's
// ping and token: 20 manifest reads in one repository cost one ping, not twenty.
func TestRemoteOptionsShareThePuller(t *testing.T) {
	fs := newFaultServer(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	digest := fs.push(t, "app", "v1", img)
	c := fs.client(t)
	if _, err := c.Tags(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	pings := fs.count("GET /v2/")
	for range 20 {
		ref, _ := name.NewDigest(fs.host()+"/app@"+digest, name.Insecure)
		if _, err := remote.Get(ref, append(c.RemoteOptions(), remote.WithContext(context.Background()))...); err != nil {
			t.Fatal(err)
		}
	}
	if got := fs.count("GET /v2/") - pings; got != 0 {
		t.Fatalf("%d more pings for 20 reads through RemoteOptions, want 0", got)
	}
	// A content error keeps the set-up; a failure that may pass drops it, and the next read sets
	// up afresh (one ping).
	c.Forget(fmt.Errorf("%w: no such tag", ErrNotFound))
	c.Forget(fmt.Errorf("%w: boom", ErrUnavailable))
	if _, err := c.Tags(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	if got := fs.count("GET /v2/") - pings; got != 1 {
		t.Fatalf("%d pings after Forget, want 1", got)
	}
}
