//go:build tools

// Package tools pins the notation CLI so that `go build github.com/notaryproject/notation/cmd/notation`
// builds it from the Go module proxy (Makefile target $(NOTATION)).
package tools

import _ "github.com/notaryproject/notation/cmd/notation"
