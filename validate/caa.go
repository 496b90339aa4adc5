package validate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// CAACheck is what a CAA check (RFC 8659, with RFC 8657's accounturi and
// validationmethods parameters) needs to know about the issuance.
type CAACheck struct {
	Name       string   // the identifier, without "*." for wildcards
	Wildcard   bool     // the certificate will name *.Name
	Identities []string // this CA's issuer domain names
	AccountURL string   // the requesting account, for accounturi
	Method     string   // the challenge type that proved control, for validationmethods
}

// CheckCAA finds the relevant CAA record set by climbing from the name
// toward the root (RFC 8659 §3) and decides whether this CA may issue. No
// records anywhere permits issuance; a lookup that fails refuses it, since
// a missing answer is not an answer that permits.
func CheckCAA(ctx context.Context, r *Resolver, c CAACheck) error {
	if r == nil {
		r = resolverFor(Challenge{})
	}
	name := strings.TrimSuffix(strings.ToLower(c.Name), ".")
	if _, ok := r.static(name); ok {
		return nil // a lab name from the static host table: no DNS, no CAA
	}
	var candidates []string
	for candidate := name; candidate != ""; candidate = parentDomain(candidate) {
		candidates = append(candidates, candidate)
	}
	// All levels are asked at once, so the check takes one round trip
	// rather than one per label; the answers are then read from the name
	// toward the root exactly as a sequential climb would.
	type answer struct {
		records []*dns.CAA
		err     error
	}
	answers := make([]answer, len(candidates))
	var wg sync.WaitGroup
	for i, candidate := range candidates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i].records, answers[i].err = r.LookupCAA(ctx, candidate)
		}()
	}
	wg.Wait()
	for i, candidate := range candidates {
		if err := answers[i].err; err != nil {
			detail := err.Error()
			var p *Problem
			if errors.As(err, &p) {
				detail = p.Detail
			}
			return Problemf(ProblemCAA, "CAA lookup for %s failed, so issuance is refused: %s", candidate, detail)
		}
		if len(answers[i].records) > 0 {
			return evaluateCAA(candidate, answers[i].records, c)
		}
	}
	return nil
}

// parentDomain drops the leftmost label; "" after the TLD, since the root
// holds no CAA records.
func parentDomain(name string) string {
	_, parent, ok := strings.Cut(name, ".")
	if !ok {
		return ""
	}
	return parent
}

// evaluateCAA applies the relevant record set found at owner.
func evaluateCAA(owner string, records []*dns.CAA, c CAACheck) error {
	var issue, issuewild []*dns.CAA
	for _, rr := range records {
		switch strings.ToLower(rr.Tag) {
		case "issue":
			issue = append(issue, rr)
		case "issuewild":
			issuewild = append(issuewild, rr)
		case "iodef", "issuemail", "issuevmc", "contactemail", "contactphone":
			// Known properties that do not restrict TLS issuance.
		default:
			if rr.Flag&128 != 0 {
				return Problemf(ProblemCAA, "CAA record at %s has the unknown critical property %q (%s), which forbids issuance by any CA that does not understand it", owner, rr.Tag, caaString(rr))
			}
		}
	}
	relevant := issue
	kind := "issue"
	if c.Wildcard && len(issuewild) > 0 {
		relevant, kind = issuewild, "issuewild"
	}
	if len(relevant) == 0 {
		return nil // the set restricts other kinds of issuance only
	}
	var reasons []string
	for _, rr := range relevant {
		ok, why := caaPermits(rr.Value, c)
		if ok {
			return nil
		}
		reasons = append(reasons, fmt.Sprintf("%s (%s)", caaString(rr), why))
	}
	what := c.Name
	if c.Wildcard {
		what = "*." + c.Name
	}
	return Problemf(ProblemCAA, "CAA records at %s forbid this CA (%s) from issuing for %s: no %q record permits it: %s",
		owner, strings.Join(c.Identities, ", "), what, kind, strings.Join(reasons, "; "))
}

// caaPermits parses one issue/issuewild value (RFC 8659 §4.2) and says
// whether it permits this issuance, and if not, why.
func caaPermits(value string, c CAACheck) (bool, string) {
	domain, params, _ := strings.Cut(value, ";")
	domain = strings.ToLower(strings.TrimSpace(domain))
	if domain == "" {
		return false, "it permits no CA"
	}
	matched := false
	for _, id := range c.Identities {
		if strings.EqualFold(strings.TrimSuffix(id, "."), domain) {
			matched = true
		}
	}
	if !matched {
		return false, "it names another CA"
	}
	for _, param := range strings.Split(params, ";") {
		param = strings.TrimSpace(param)
		if param == "" {
			continue
		}
		key, val, ok := strings.Cut(param, "=")
		if !ok {
			return false, fmt.Sprintf("parameter %q is malformed", param)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch strings.ToLower(key) {
		case "accounturi":
			if val != c.AccountURL {
				return false, fmt.Sprintf("accounturi %s is not the requesting account %s", val, c.AccountURL)
			}
		case "validationmethods":
			allowed := false
			for _, m := range strings.Split(val, ",") {
				if strings.EqualFold(strings.TrimSpace(m), c.Method) {
					allowed = true
				}
			}
			if !allowed {
				return false, fmt.Sprintf("validationmethods %s does not include %s", val, c.Method)
			}
		default:
			// RFC 8659 §4.2: unknown parameters are ignored.
		}
	}
	return true, ""
}

func caaString(rr *dns.CAA) string {
	return fmt.Sprintf("%d %s %q", rr.Flag, rr.Tag, rr.Value)
}
