package main

// certbot's manual plugin with hooks, the way users automate dns-01 with a
// DNS provider certbot has no plugin for: a wildcard and its base name.

import "testing"

// testCertbotManualDNS runs certbot --manual with the DNS hook as auth and
// cleanup hook. certbot runs the auth hook once per name with
// CERTBOT_DOMAIN (the wildcard's base name for *.manual.example.test) and
// CERTBOT_VALIDATION, presents both records at the one TXT name, and only
// then asks the CA to validate.
func testCertbotManualDNS(t *testing.T, ca *testCA, dns *dnsControl) {
	cb := newCertbot(t, requireClient(t, "certbot"), ca)
	dns.logOnFailure(t)
	t.Setenv(dnsHookEnv, dns.url) // certbot passes its environment on to the hooks
	cb.mustRun(t, "certonly", "--server", ca.DirectoryURL,
		"-m", "manual@example.test", "--agree-tos", "--no-eff-email",
		"--manual", "--preferred-challenges", "dns",
		"--manual-auth-hook", hookCommand(t, "present"),
		"--manual-cleanup-hook", hookCommand(t, "cleanup"),
		"-d", "*.manual.example.test", "-d", "manual.example.test")
	// certbot names the lineage after the first name, without "*.".
	cb.lineage(t, "manual.example.test", "*.manual.example.test", "manual.example.test")
	dns.checkCleanedUp(t, "manual.example.test")
}
