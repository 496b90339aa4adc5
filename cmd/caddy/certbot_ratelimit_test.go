package main

// Real certbot against a CA with a small duplicate-certificate limit: the
// refusal reaches the user with the limit's name and the time it frees up.

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// rfc3339Re finds an RFC 3339 time such as the one a refusal names.
var rfc3339Re = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)

func TestCertbotRateLimitDuplicate(t *testing.T) {
	path := requireClient(t, "certbot")
	ca := startCA(t, withCaddyfile("ratelimit.Caddyfile.tmpl"),
		withRateLimits("rate_limits {\n\t\t\tduplicate_certificates 1 1h\n\t\t}"))
	cb := newCertbot(t, path, ca)
	names := []string{"dup.example.test", "www.dup.example.test"}
	certonly := []string{"certonly", "--server", ca.DirectoryURL,
		"--register-unsafely-without-email", "--agree-tos",
		"--standalone", "--http-01-port", itoa(ca.ValidationPort), "--http-01-address", "127.0.0.1",
		"-d", names[0], "-d", names[1]}

	cb.mustRun(t, certonly...)
	cb.lineage(t, names[0], names...)

	for _, again := range [][]string{
		{"--force-renewal"}, // renewing the lineage early
		{"--duplicate"},     // a second lineage for the same names
	} {
		t.Run(strings.TrimPrefix(again[0], "--"), func(t *testing.T) {
			offset := ca.logSize()
			began := time.Now()
			out, err := cb.run(t, append(certonly, again...)...)
			if err == nil {
				cb.fail(t, "a second certificate for the same names was issued; want duplicate_certificates to refuse it", out, offset)
			}
			if !cb.reportedProblem(t, out, "rateLimited", "too many requests") {
				cb.fail(t, "certbot failed, but did not report rateLimited", out, offset)
			}
			// What the user can read: certbot's output, or its log when
			// certbot 2.1 hides the problem (see reportedProblem).
			logText, _ := os.ReadFile(filepath.Join(cb.logDir, "letsencrypt.log"))
			// Best the error certbot raised from our problem (type and
			// detail on one line), else the detail as certbot logged the
			// response.
			var line, raw string
			for _, l := range strings.Split(out+"\n"+string(logText), "\n") {
				if !strings.Contains(l, "duplicate_certificates") || !rfc3339Re.MatchString(l) {
					continue
				}
				if strings.Contains(l, "rateLimited") && line == "" {
					line = l
				} else if raw == "" {
					raw = l
				}
			}
			if line == "" {
				line = raw
			}
			if line == "" {
				cb.fail(t, "neither certbot's output nor its log names duplicate_certificates with the time it frees up", out, offset)
			}
			at, err := time.Parse(time.RFC3339, rfc3339Re.FindString(line))
			if err != nil {
				t.Fatal(err)
			}
			// One per hour, one issued just now: free again in about an
			// hour (to the second: the detail has no fractions).
			if d := at.Sub(began); d < 59*time.Minute || d > 61*time.Minute {
				t.Errorf("the refusal says the limit frees up at %s, %v from now; want about an hour", at.Format(time.RFC3339), d)
			}
			t.Logf("certbot reports: %s", strings.TrimSpace(line))
		})
	}
	// The refusals issued nothing.
	if _, err := os.Stat(filepath.Join(cb.configDir, "live", names[0]+"-0001")); err == nil {
		t.Error("certbot --duplicate wrote a second lineage")
	}
}
