//go:build tools

// Package tools pins h2spec's command as a dependency of this module, so that
// `go build github.com/summerwind/h2spec/cmd/h2spec` here builds the version in go.mod.
package tools

import _ "github.com/summerwind/h2spec/cmd/h2spec"
