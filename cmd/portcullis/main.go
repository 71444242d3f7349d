// Command portcullis is Portcullis's command-line tool: compliance reports and what-if evaluations
// of RepositoryPolicies against a cluster (docs/cli.md). Installed as kubectl-portcullis too, it
// runs as `kubectl portcullis`.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/portcullis-dev/portcullis/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Run(ctx, os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
