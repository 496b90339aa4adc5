package acme

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"sort"
)

// newID returns a random 128-bit identifier, base64url: unguessable, so
// resource URLs need no further access control for existence.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// newToken returns a challenge token: 256 random bits, base64url (§8.1
// asks for at least 128).
func newToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func sortStrings(s []string) { sort.Strings(s) }

// decodePayload decodes a JSON payload strictly enough to catch type errors
// while ignoring fields added by later specifications.
func decodePayload(payload []byte, v any) *Problem {
	if len(payload) == 0 {
		return Malformed("this request needs a JSON object payload, not POST-as-GET")
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return Malformed("payload does not parse: %v", err)
	}
	return nil
}
