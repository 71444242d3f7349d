package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestChooseVulnDB: trivy's DB when its repository answers (a real registry holding it), the
// shipped one when it does not or when none is asked for, and the user's own flags left alone;
// each time the demo says which.
func TestChooseVulnDB(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/aquasec/trivy-db:2", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()
	probe := func(ctx context.Context, repo string) error { return probeRepository(ctx, repo, name.Insecure) }
	args := []string{"bin/manager", "--cache-dir=.local/cache", "--vulndb-dir=.local/vulndb/db", "--egress-allow=127.0.0.0/8"}

	for _, c := range []struct {
		about, repo string
		args        []string
		download    bool
		says        string
	}{
		{"reachable", host + "/aquasec/trivy-db:2", args, true, "vulnerability DB: trivy's DB from " + host + "/aquasec/trivy-db:2"},
		{"no such repository", host + "/aquasec/none:2", args, false, "is not reachable"},
		{"registry down", closed + "/aquasec/trivy-db:2", args, false, "is not reachable"},
		{"none asked for", "", args, false, "shipped in third_party/go-vulndb"},
		{"the user's own DB flags", host + "/aquasec/trivy-db:2", []string{"bin/manager", "--vulndb-repository=my.mirror/trivy-db:2"}, false, ""},
	} {
		var out bytes.Buffer
		got, download := chooseVulnDB(context.Background(), c.args, c.repo, probe, &out)
		want := c.args
		if c.download {
			want = []string{"bin/manager", "--cache-dir=.local/cache", "--vulndb-repository=" + c.repo, "--egress-allow=127.0.0.0/8"}
		}
		if download != c.download || !slices.Equal(got, want) || !strings.Contains(out.String(), c.says) {
			t.Errorf("%s: download %t, args %q, said %q; want %t, %q, %q", c.about, download, got, out.String(), c.download, want, c.says)
		}
	}
	if args[2] != "--vulndb-dir=.local/vulndb/db" {
		t.Errorf("the caller's args were modified: %q", args)
	}
}
