package caddymodule

import (
	"errors"
	"testing"

	"github.com/go-acme/lego/v5/acme"
)

// assertProblem checks that a lego error carries the ACME problem type.
func assertProblem(t *testing.T, err error, typ string) *acme.ProblemDetails {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want problem %s", typ)
	}
	var pd *acme.ProblemDetails
	if !errors.As(err, &pd) {
		t.Fatalf("error %v is not an ACME problem, want %s", err, typ)
	}
	if pd.Type != typ {
		t.Fatalf("problem type %s (%s), want %s", pd.Type, pd.Detail, typ)
	}
	return pd
}
