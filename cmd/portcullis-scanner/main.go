// Command portcullis-scanner is the scan worker of the Portcullis manager: the one binary that links
// trivy. It runs in one of two ways:
//
//   - started by the manager (--scanner-binary; by default the portcullis-scanner beside the
//     manager's own executable) as a long-lived child that scans images on request, and for each
//     vulnerability DB download; the manager passes its configuration in the environment (see
//     package internal/scan);
//   - on its own, with --listen=<unix socket>: the scanner container of config/manager, which has no
//     ServiceAccount token and its own resource limits. The manager (--scanner-socket) connects, names
//     the DB to open and sends scans and DB downloads; the image bytes come through the manager's
//     relay, so no registry credential reaches this process either. It stops on SIGTERM.
//
// Run by hand without --listen, it says so and exits with status 2.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/portcullis-dev/portcullis/internal/scan/trivyscan"
)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50) // as the manager: a smaller heap between collections
	}
	trivyscan.RunWorkerIfAsked()
	listen := flag.String("listen", "", "Unix socket to serve the manager's scans on (the scanner container); the manager's --scanner-socket names the same path.")
	flag.Parse()
	if *listen == "" {
		fmt.Fprintln(os.Stderr, "portcullis-scanner: the Portcullis manager starts this scan worker itself (see the manager's --scanner-binary), or run it with --listen=<socket> beside a manager started with --scanner-socket")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Fprintln(os.Stderr, "portcullis-scanner: listening on", *listen)
	if err := trivyscan.Listen(ctx, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "portcullis-scanner:", err)
		os.Exit(1)
	}
}
