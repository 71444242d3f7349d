// Command portcullis-scanner is the scan worker of the Portcullis manager: the one binary that links
// trivy. The manager starts it (--scanner-binary; by default the portcullis-scanner beside the
// manager's own executable) as a long-lived child that scans images on request, and for each
// vulnerability DB download. It takes no flags: the manager passes its configuration in the
// environment (see package internal/scan). Run by hand, it says so and exits with status 2.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/portcullis-dev/portcullis/internal/scan/trivyscan"
)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50) // as the manager: a smaller heap between collections
	}
	trivyscan.RunWorkerIfAsked()
	fmt.Fprintln(os.Stderr, "portcullis-scanner: the Portcullis manager starts this scan worker itself (see the manager's --scanner-binary); it is not run by hand")
	os.Exit(2)
}
