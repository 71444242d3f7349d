package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// defaultVulnDB is trivy's own vulnerability DB, as trivy downloads it by default.
const defaultVulnDB = "mirror.gcr.io/aquasec/trivy-db:2"

// probeTimeout bounds the check that the DB's registry answers.
const probeTimeout = 5 * time.Second

// probeRepository checks with one manifest HEAD, anonymously, that repo answers.
func probeRepository(ctx context.Context, repo string, opts ...name.Option) error {
	ref, err := name.ParseReference(repo, opts...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err = remote.Head(ref, remote.WithContext(ctx), remote.WithUserAgent("portcullis-demo"))
	return err
}

// chooseVulnDB picks the vulnerability DB of the demo's manager and says which on w: trivy's DB
// from repo when it answers (the args' --vulndb-dir=... becomes --vulndb-repository=repo; the
// manager downloads it into its --cache-dir before it starts), else the DB built from the Go
// vulnerability database shipped in third_party/go-vulndb. Args without --vulndb-dir (the user chose)
// and an empty repo are left as they are. It returns the args and whether the download was chosen.
func chooseVulnDB(ctx context.Context, args []string, repo string, probe func(context.Context, string) error, w io.Writer) ([]string, bool) {
	at := -1
	for i, a := range args {
		if strings.HasPrefix(a, "--vulndb-dir=") {
			at = i
		}
	}
	const shipped = "the one built from the Go vulnerability database shipped in third_party/go-vulndb (OSV, CC-BY-4.0)"
	switch {
	case at < 0:
		return args, false
	case repo == "":
		fmt.Fprintf(w, "localenv: vulnerability DB: %s\n", shipped)
		return args, false
	}
	if err := probe(ctx, repo); err != nil {
		fmt.Fprintf(w, "localenv: vulnerability DB: %s; trivy's DB at %s is not reachable (%s)\n", shipped, repo, firstLine(err.Error()))
		return args, false
	}
	out := append([]string{}, args...)
	out[at] = "--vulndb-repository=" + repo
	fmt.Fprintf(w, "localenv: vulnerability DB: trivy's DB from %s (the manager downloads it before it starts; DEMO_VULNDB_REPOSITORY= uses the shipped one)\n", repo)
	return out, true
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
