package acme

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/acmeca/caddy-acmeca/storage"
)

func TestNewProblemStatus(t *testing.T) {
	// The statuses are written out here, not read from statusFor, so a
	// wrong entry there fails.
	tests := []struct {
		typ    string
		status int
	}{
		{ErrAccountDoesNotExist, http.StatusBadRequest},
		{ErrAlreadyRevoked, http.StatusBadRequest},
		{ErrBadCSR, http.StatusBadRequest},
		{ErrBadNonce, http.StatusBadRequest},
		{ErrBadPublicKey, http.StatusBadRequest},
		{ErrBadRevocationReason, http.StatusBadRequest},
		{ErrBadSignatureAlgorithm, http.StatusBadRequest},
		{ErrCAA, http.StatusForbidden},
		{ErrCompound, http.StatusBadRequest},
		{ErrConnection, http.StatusBadRequest},
		{ErrDNS, http.StatusBadRequest},
		{ErrExternalAccountRequired, http.StatusUnauthorized},
		{ErrIncorrectResponse, http.StatusForbidden},
		{ErrInvalidContact, http.StatusBadRequest},
		{ErrMalformed, http.StatusBadRequest},
		{ErrOrderNotReady, http.StatusForbidden},
		{ErrRateLimited, http.StatusTooManyRequests},
		{ErrRejectedIdentifier, http.StatusBadRequest},
		{ErrServerInternal, http.StatusInternalServerError},
		{ErrTLS, http.StatusBadRequest},
		{ErrUnauthorized, http.StatusForbidden},
		{ErrUnsupportedContact, http.StatusBadRequest},
		{ErrUnsupportedIdentifier, http.StatusBadRequest},
		{ErrUserActionRequired, http.StatusForbidden},
		{"somethingNew", http.StatusBadRequest}, // unknown types default to 400
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			p := NewProblem(tt.typ, "detail %d", 7)
			if want := "urn:ietf:params:acme:error:" + tt.typ; p.Type != want {
				t.Errorf("Type = %q, want %q", p.Type, want)
			}
			if p.Status != tt.status {
				t.Errorf("Status = %d, want %d", p.Status, tt.status)
			}
			if p.Detail != "detail 7" {
				t.Errorf("Detail = %q, want %q", p.Detail, "detail 7")
			}
		})
	}
	// Every type the package declares is in the table above.
	for typ := range statusFor {
		if !slices.ContainsFunc(tests, func(tt struct {
			typ    string
			status int
		}) bool {
			return tt.typ == typ
		}) {
			t.Errorf("type %q has a status but no test case", typ)
		}
	}
}

func TestProblemDetailFormatting(t *testing.T) {
	tests := []struct {
		name   string
		p      *Problem
		detail string
	}{
		{"no args", NewProblem(ErrMalformed, "plain"), "plain"},
		{"args formatted", Malformed("order %s has %d names", "o1", 3), "order o1 has 3 names"},
		{"Unauthorized", Unauthorized("no"), "no"},
		{"Internal", Internal("oops"), "oops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.p.Detail != tt.detail {
				t.Errorf("Detail = %q, want %q", tt.p.Detail, tt.detail)
			}
		})
	}
	wantProblem(t, Unauthorized("x"), ErrUnauthorized)
	wantProblem(t, Internal("x"), ErrServerInternal)
	wantProblem(t, Malformed("x"), ErrMalformed)
	if p := Malformed("x").WithStatus(http.StatusNotFound); p.Status != http.StatusNotFound {
		t.Errorf("WithStatus: %d", p.Status)
	}
	if got := NewProblem(ErrBadNonce, "stale").Error(); got != ErrorNS+"badNonce: stale" {
		t.Errorf("Error() = %q", got)
	}
}

func TestCompound(t *testing.T) {
	a := storage.Identifier{Type: "dns", Value: "a.example"}
	b := storage.Identifier{Type: "ip", Value: "192.0.2.1"}
	subCAA := SubproblemOf(ErrCAA, a, "CAA forbids %s", "us")
	subType := SubproblemOf(ErrUnsupportedIdentifier, b, "no ip")

	t.Run("one subproblem takes its type", func(t *testing.T) {
		p := Compound("cannot issue", []Subproblem{subCAA})
		wantProblem(t, p, ErrCAA, "cannot issue", "CAA forbids us")
		if p.Status != http.StatusForbidden {
			t.Errorf("Status = %d, want %d (that of caa)", p.Status, http.StatusForbidden)
		}
		if !reflect.DeepEqual(p.Subproblems, []Subproblem{subCAA}) {
			t.Errorf("Subproblems = %+v", p.Subproblems)
		}
	})
	t.Run("two subproblems are compound", func(t *testing.T) {
		p := Compound("cannot issue", []Subproblem{subCAA, subType})
		wantProblem(t, p, ErrCompound, "cannot issue")
		if p.Status != http.StatusBadRequest {
			t.Errorf("Status = %d, want 400", p.Status)
		}
		if !reflect.DeepEqual(p.Subproblems, []Subproblem{subCAA, subType}) {
			t.Errorf("Subproblems = %+v", p.Subproblems)
		}
	})
	t.Run("subproblem of", func(t *testing.T) {
		want := Subproblem{Type: ErrorNS + ErrCAA, Detail: "CAA forbids us", Identifier: a}
		if subCAA != want {
			t.Errorf("SubproblemOf = %+v, want %+v", subCAA, want)
		}
	})
}

func TestProblemJSON(t *testing.T) {
	p := Compound("two bad names", []Subproblem{
		SubproblemOf(ErrRejectedIdentifier, storage.Identifier{Type: "dns", Value: "bad_name.example"}, "underscore"),
		SubproblemOf(ErrUnsupportedIdentifier, storage.Identifier{Type: "ip", Value: "192.0.2.1"}, "no ip"),
	})
	p.location = "https://ca.example/acme/account/x"
	p.retryAfter = 30
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// No algorithms or identifier (empty), no location or retryAfter
	// (unexported, set for headers only).
	if want := []string{"detail", "status", "subproblems", "type"}; !slices.Equal(keys, want) {
		t.Errorf("keys = %v, want %v in %s", keys, want, b)
	}
	if got["type"] != ErrorNS+ErrCompound || got["detail"] != "two bad names" || got["status"] != float64(400) {
		t.Errorf("top level = %s", b)
	}
	if strings.Contains(string(b), "ca.example") {
		t.Errorf("unexported fields leaked: %s", b)
	}
	subs, _ := got["subproblems"].([]any)
	if len(subs) != 2 {
		t.Fatalf("subproblems = %v", got["subproblems"])
	}
	wantSubs := []map[string]any{
		{"type": ErrorNS + ErrRejectedIdentifier, "detail": "underscore", "identifier": map[string]any{"type": "dns", "value": "bad_name.example"}},
		{"type": ErrorNS + ErrUnsupportedIdentifier, "detail": "no ip", "identifier": map[string]any{"type": "ip", "value": "192.0.2.1"}},
	}
	for i, s := range subs {
		if !reflect.DeepEqual(s, any(wantSubs[i])) {
			t.Errorf("subproblems[%d] = %v, want %v", i, s, wantSubs[i])
		}
	}

	t.Run("badSignatureAlgorithm lists algorithms", func(t *testing.T) {
		p := NewProblem(ErrBadSignatureAlgorithm, "no")
		p.Algorithms = SignatureAlgorithms
		b, _ := json.Marshal(p)
		var got struct {
			Algorithms []string `json:"algorithms"`
		}
		json.Unmarshal(b, &got)
		if !slices.Equal(got.Algorithms, SignatureAlgorithms) {
			t.Errorf("algorithms = %v in %s", got.Algorithms, b)
		}
	})
}

func TestProblemStoredRoundTrip(t *testing.T) {
	p := NewProblem(ErrIncorrectResponse, "wrong key authorization")
	p.Subproblems = []Subproblem{{Type: ErrorNS + ErrDNS}}
	got := fromStored(p.stored())
	want := &Problem{Type: ErrorNS + ErrIncorrectResponse, Detail: "wrong key authorization", Status: http.StatusForbidden}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("fromStored(stored()) = %+v, want %+v", got, want)
	}
	if fromStored(nil) != nil {
		t.Error("fromStored(nil) != nil")
	}
}
