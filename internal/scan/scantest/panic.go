package scantest

import (
	"context"
	"os"
	"strings"

	"github.com/aquasecurity/trivy/pkg/fanal/analyzer"
)

// PanicMessage is what PanicAnalyzer panics with.
const PanicMessage = "test analyzer: boom on a hostile file"

// PanicAnalyzer is a trivy analyzer that panics, inside one of trivy's analysis goroutines (where no
// recover of the caller reaches), on a file whose name ends in "panic-me": what a trivy bug on a
// hostile file would do. Register it with analyzer.RegisterAnalyzer only in a process that may die:
// a scan worker started by a test.
type PanicAnalyzer struct{}

// Type names the analyzer.
func (PanicAnalyzer) Type() analyzer.Type { return "portcullis-test-panic" }

// Version of the analyzer (part of trivy's cache keys).
func (PanicAnalyzer) Version() int { return 1 }

// Required selects the files named "panic-me".
func (PanicAnalyzer) Required(path string, _ os.FileInfo) bool {
	return strings.HasSuffix(path, "panic-me")
}

// Analyze panics.
func (PanicAnalyzer) Analyze(context.Context, analyzer.AnalysisInput) (*analyzer.AnalysisResult, error) {
	panic(PanicMessage)
}
