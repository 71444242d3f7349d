package receiver

import "regexp"

// Names as the OCI distribution spec defines them ("Pulling manifests": <name> and <reference>).
var (
	repoName   = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagName    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	digestName = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)
