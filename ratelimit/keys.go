package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"sort"
	"strings"

	"github.com/weppos/publicsuffix-go/publicsuffix"
)

// RegisteredDomain is the name's registered domain by the Public Suffix
// List (www.example.com → example.com, new.blog.example.co.uk →
// example.co.uk). Under a TLD the list does not know (.internal, .test)
// the last two labels are taken, as the list's default rule says. An IP
// address is its own key.
func RegisteredDomain(name string) string {
	name = strings.TrimPrefix(strings.ToLower(name), "*.")
	if net.ParseIP(name) != nil {
		return name
	}
	if d, err := publicsuffix.Domain(name); err == nil {
		return d
	}
	return name // a public suffix itself; policy refuses those anyway
}

// CertificateTransactions are what issuing one certificate for names
// spends: one per distinct registered domain among the names, and one for
// the exact set of names.
func CertificateTransactions(account string, names []string) []Transaction {
	seen := map[string]bool{}
	var txns []Transaction
	for _, n := range names {
		d := RegisteredDomain(n)
		if !seen[d] {
			seen[d] = true
			txns = append(txns, Transaction{Limit: CertificatesPerRegisteredDomain, Key: d, Account: account})
		}
	}
	sort.Slice(txns, func(i, j int) bool { return txns[i].Key < txns[j].Key })
	dup := Transaction{Limit: DuplicateCertificates, Key: NameSetKey(names), Account: account, Label: nameSetLabel(names)}
	if len(txns) > 0 {
		host := txns[0]
		dup.StoredWith = &Transaction{Limit: host.Limit, Key: host.Key}
	}
	return append(txns, dup)
}

// NameSetKey identifies a set of names, case and order ignored.
func NameSetKey(names []string) string {
	sum := sha256.Sum256([]byte(strings.Join(nameSet(names), ",")))
	return hex.EncodeToString(sum[:16])
}

// nameSetLabel lists a set of names for people.
func nameSetLabel(names []string) string { return strings.Join(nameSet(names), ", ") }

// nameSet is names lower-cased, sorted and once each.
func nameSet(names []string) []string {
	set := make([]string, 0, len(names))
	seen := map[string]bool{}
	for _, n := range names {
		n = strings.ToLower(n)
		if !seen[n] {
			seen[n] = true
			set = append(set, n)
		}
	}
	sort.Strings(set)
	return set
}

// FailedValidationKey is the bucket of failed validations for one account
// and hostname.
func FailedValidationKey(account, hostname string) string {
	return account + ":" + strings.ToLower(hostname)
}
