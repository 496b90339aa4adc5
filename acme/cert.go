package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/acmeca/caddy-acmeca/ratelimit"
	"github.com/acmeca/caddy-acmeca/storage"
)

type finalizePayload struct {
	CSR string `json:"csr"`
}

// handleFinalize checks the CSR of a ready order and issues the certificate
// (RFC 8555 §7.4). Issuance happens within the request, so the order is
// valid when the response leaves.
func (s *Server) handleFinalize(w http.ResponseWriter, r *http.Request, req *signedRequest, args []string) *Problem {
	ctx := r.Context()
	var pl finalizePayload
	if p := decodePayload(req.Payload, &pl); p != nil {
		return p
	}
	defer s.Shared.lock("order:" + args[0])()
	// With other nodes sharing the storage, finalizes of one order on two
	// nodes must not both sign (they would make two certificates with the
	// one serial the order determines): take the order's storage lock.
	// Alone, the in-process lock above is enough and costs no lock file.
	if !s.nonces.Alone() {
		if err := s.store.Lock(ctx, "finalize-"+args[0]); err != nil {
			s.logger.Error("locking order for finalize", errField(err))
			return Internal("could not lock the order; retry")
		}
		defer func() {
			if err := s.store.Unlock(context.Background(), "finalize-"+args[0]); err != nil {
				s.logger.Warn("unlocking order", errField(err))
			}
		}()
	}
	o, p := s.loadOwnOrder(ctx, req, args[0])
	if p != nil {
		return p
	}
	authzs := map[string]*storage.Authorization{}
	status, _, p := s.orderStateWith(ctx, o, authzs)
	if p != nil {
		return p
	}
	if status != storage.StatusReady {
		return NewProblem(ErrOrderNotReady, "order is %s, not ready; finalize it once all its authorizations are valid", status)
	}
	der, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(pl.CSR, "="))
	if err != nil {
		return NewProblem(ErrBadCSR, "csr is not base64url-encoded DER: %v", err)
	}
	csr, p := checkCSR(der, o.Identifiers, req.Account)
	if p != nil {
		return p
	}
	if p := s.recheckCAA(ctx, o, authzs); p != nil {
		return p
	}
	names := make([]string, len(o.Identifiers))
	for i, id := range o.Identifiers {
		names[i] = id.Value
	}

	// Signing takes well under a millisecond and happens within this
	// request (under the order's lock), so "processing" is never stored:
	// a process that stops here leaves the order ready, to be finalized
	// again, never stuck.
	chain, err := s.Signer.Sign(ctx, csr, names, s.Shared.serialFor(o.ID))
	if err != nil {
		s.logger.Error("signing certificate", errField(err), zap.String("order", o.ID))
		return Internal("could not sign the certificate; finalize may be retried")
	}
	leaf := chain[0]
	var pemBuf bytes.Buffer
	for _, c := range chain {
		pem.Encode(&pemBuf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	rec := &storage.Certificate{
		Serial:    serialHex(leaf),
		AccountID: o.AccountID,
		OrderID:   o.ID,
		Names:     names,
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
		ChainPEM:  pemBuf.String(),
	}

	// The certificate limits are spent while the certificate is stored:
	// each waits on a disk sync, and together finalize waits for one. A
	// refused spend deletes the stored certificate (the order's readers
	// wait on its lock meanwhile), and a failed write gives the spend
	// back, so nothing is half-done.
	limits := ratelimit.CertificateTransactions(o.AccountID, names)
	var refused *Problem
	var writeErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); refused = s.limit(ctx, limits, true) }()
	go func() { defer wg.Done(); writeErr = s.store.PutCertificate(ctx, rec) }()
	wg.Wait()
	switch {
	case refused != nil:
		if err := s.store.DeleteCertificate(ctx, rec.Serial); err != nil {
			s.logger.Error("removing a certificate whose limits refused", errField(err), zap.String("serial", rec.Serial))
		}
		return refused
	case writeErr != nil:
		if err := s.Limiter.Refund(ctx, limits); err != nil {
			s.logger.Error("refunding certificate limits", errField(err))
		}
		s.logger.Error("storing certificate", errField(writeErr))
		return Internal("could not store the certificate; finalize may be retried")
	}
	// The order record is not written: it is valid because a certificate
	// with its serial exists (see orderState).
	s.logger.Info("certificate issued", zap.String("serial", rec.Serial), zap.Strings("names", names), zap.String("account", o.AccountID))
	obj := s.renderOrder(ctx, o, storage.StatusValid, nil)
	w.Header().Set("Location", s.resourceURL(ctx, "order", o.ID))
	s.writeJSON(w, r, http.StatusOK, obj)
	return nil
}

// caaRecheckAfter: CAA is checked again at finalize for authorizations
// validated longer ago than this (CA/B Forum Baseline Requirements 3.2.2.8).
const caaRecheckAfter = 8 * time.Hour

// recheckCAA takes the order's authorizations from known, loading any
// that are missing.
func (s *Server) recheckCAA(ctx context.Context, o *storage.Order, known map[string]*storage.Authorization) *Problem {
	if !s.CAA {
		return nil
	}
	now := s.Now()
	for _, id := range o.AuthzIDs {
		a := known[id]
		if a == nil {
			var err error
			if a, err = s.store.Authorization(ctx, id); err != nil {
				s.logger.Error("loading authorization", errField(err))
				return Internal("could not load the order's authorizations")
			}
		}
		if now.Sub(a.ValidatedAt) <= caaRecheckAfter {
			continue
		}
		method := ""
		for _, c := range a.Challenges {
			if c.Status == storage.StatusValid {
				method = c.Type
			}
		}
		if err := s.checkCAA(ctx, a, method, s.accountURL(ctx, a.AccountID), s.caaIdentities(ctx)); err != nil {
			return problemFromValidation(err)
		}
	}
	return nil
}

func serialHex(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// checkCSR parses a CSR and checks it against the order: a valid
// signature, a good key that is not the account key, and names that are
// exactly the order's identifiers (RFC 8555 §7.4).
func checkCSR(der []byte, idents []storage.Identifier, acct *storage.Account) (*x509.CertificateRequest, *Problem) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, NewProblem(ErrBadCSR, "CSR does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, NewProblem(ErrBadCSR, "CSR signature does not verify: %v", err)
	}
	if p := CheckCertificateKey(csr.PublicKey); p != nil {
		return nil, NewProblem(ErrBadCSR, "CSR key: %s", p.Detail)
	}
	if spki, err := x509.MarshalPKIXPublicKey(csr.PublicKey); err == nil {
		if acctSPKI := accountSPKI(acct); acctSPKI != nil && bytes.Equal(spki, acctSPKI) {
			return nil, NewProblem(ErrBadCSR, "CSR key must not be the account key")
		}
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, NewProblem(ErrBadCSR, "CSR may only name DNS names and IP addresses, not email addresses or URIs")
	}
	// Names are compared with their type ("dns:" or "ip:"), so an IP
	// address written as a DNS name does not stand in for an IP SAN.
	want := make(map[string]bool, len(idents))
	for _, id := range idents {
		want[id.Type+":"+id.Value] = true
	}
	got := make(map[string]bool)
	for _, n := range csr.DNSNames {
		got["dns:"+strings.ToLower(n)] = true
	}
	for _, ip := range csr.IPAddresses {
		got["ip:"+ip.String()] = true
	}
	if cn := strings.ToLower(csr.Subject.CommonName); cn != "" {
		key := "dns:" + cn
		if ip := net.ParseIP(cn); ip != nil {
			key = "ip:" + ip.String()
		}
		if !want[key] {
			return nil, NewProblem(ErrBadCSR, "CSR common name %q is not one of the order's identifiers", csr.Subject.CommonName)
		}
		got[key] = true
	}
	var missing, extra []string
	for n := range want {
		if !got[n] {
			missing = append(missing, describeName(n))
		}
	}
	for n := range got {
		if !want[n] {
			extra = append(extra, describeName(n))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	switch {
	case len(extra) > 0:
		return nil, NewProblem(ErrBadCSR, "CSR names %s, which the order does not have", strings.Join(extra, ", "))
	case len(missing) > 0:
		return nil, NewProblem(ErrBadCSR, "CSR lacks %s, which the order has", strings.Join(missing, ", "))
	}
	return csr, nil
}

// describeName renders a "dns:" or "ip:" name key for a problem detail.
func describeName(key string) string {
	typ, value, _ := strings.Cut(key, ":")
	if typ == "ip" {
		return "IP address " + value
	}
	return value
}

func accountSPKI(acct *storage.Account) []byte {
	k, err := parseJWK(acct.Key)
	if err != nil {
		return nil
	}
	spki, err := x509.MarshalPKIXPublicKey(k.Key)
	if err != nil {
		return nil
	}
	return spki
}

// handleCertificate downloads a certificate chain (RFC 8555 §7.4.2).
func (s *Server) handleCertificate(w http.ResponseWriter, r *http.Request, req *signedRequest, args []string) *Problem {
	ctx := r.Context()
	if !req.PostAsGet {
		return Malformed("download a certificate with POST-as-GET (an empty payload)")
	}
	rec, err := s.store.Certificate(ctx, strings.ToLower(args[0]))
	if errors.Is(err, storage.ErrNotFound) {
		return Malformed("certificate %s does not exist", args[0]).WithStatus(http.StatusNotFound)
	}
	if err != nil {
		s.logger.Error("loading certificate", errField(err))
		return Internal("could not load the certificate")
	}
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(rec.ChainPEM))
	return nil
}

type revokePayload struct {
	Certificate string `json:"certificate"`
	Reason      *int   `json:"reason"`
}

// allowedReasons are the RFC 5280 reason codes a subscriber may give:
// unspecified, keyCompromise, affiliationChanged, superseded and
// cessationOfOperation. The others speak for the CA (cACompromise,
// privilegeWithdrawn, aACompromise) or do not apply (certificateHold,
// removeFromCRL).
var allowedReasons = map[int]bool{0: true, 1: true, 3: true, 4: true, 5: true}

// handleRevoke revokes a certificate (RFC 8555 §7.6) for the account that
// ordered it, an account holding valid authorizations for all its names, or
// a request signed with the certificate's own key.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, req *signedRequest, _ []string) *Problem {
	ctx := r.Context()
	var pl revokePayload
	if p := decodePayload(req.Payload, &pl); p != nil {
		return p
	}
	der, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(pl.Certificate, "="))
	if err != nil {
		return Malformed("certificate is not base64url-encoded DER: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Malformed("certificate does not parse: %v", err)
	}
	reason := 0
	if pl.Reason != nil {
		reason = *pl.Reason
	}
	if !allowedReasons[reason] {
		return NewProblem(ErrBadRevocationReason, "revocation reason %d is not allowed; use 0 (unspecified), 1 (keyCompromise), 3 (affiliationChanged), 4 (superseded) or 5 (cessationOfOperation)", reason)
	}
	serial := serialHex(cert)
	defer s.Shared.lock("cert:" + serial)()
	rec, err := s.store.Certificate(ctx, serial)
	if errors.Is(err, storage.ErrNotFound) {
		return NewProblem(ErrMalformed, "certificate with serial %s was not issued by this CA", serial).WithStatus(http.StatusNotFound)
	}
	if err != nil {
		s.logger.Error("loading certificate", errField(err))
		return Internal("could not load the certificate")
	}
	if block, _ := pem.Decode([]byte(rec.ChainPEM)); block == nil || !bytes.Equal(block.Bytes, der) {
		return NewProblem(ErrMalformed, "certificate with serial %s was not issued by this CA", serial).WithStatus(http.StatusNotFound)
	}
	if p := s.mayRevoke(ctx, req, rec, cert); p != nil {
		return p
	}
	if rec.Revoked() {
		return NewProblem(ErrAlreadyRevoked, "certificate %s was already revoked at %s", serial, rec.RevokedAt.UTC().Format(timeFormat))
	}
	rec.RevokedAt, rec.RevocationReason = s.Now(), reason
	// The revocation list entry first: if the certificate record then
	// fails, a retry finds the certificate unrevoked and writes both.
	if err := s.store.PutRevocation(ctx, rec); err != nil {
		s.logger.Error("indexing revocation", errField(err))
		return Internal("could not record the revocation")
	}
	if err := s.store.PutCertificate(ctx, rec); err != nil {
		s.logger.Error("storing revocation", errField(err))
		return Internal("could not record the revocation")
	}
	s.logger.Info("certificate revoked", zap.String("serial", serial), zap.Int("reason", reason))
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) mayRevoke(ctx context.Context, req *signedRequest, rec *storage.Certificate, cert *x509.Certificate) *Problem {
	if req.JWK != nil {
		jwkSPKI, err := x509.MarshalPKIXPublicKey(req.JWK.Key)
		if err != nil || !bytes.Equal(jwkSPKI, cert.RawSubjectPublicKeyInfo) {
			return Unauthorized("the JWS \"jwk\" is not the certificate's key; sign with the certificate's key or with an account (\"kid\")")
		}
		return nil
	}
	if req.Account.ID == rec.AccountID {
		return nil
	}
	now := s.Now()
	for _, name := range rec.Identifiers() {
		a, _, err := s.latestAuthorization(ctx, req.Account.ID, name)
		if err != nil || a == nil || authzStatus(a, now) != storage.StatusValid {
			return Unauthorized("account %s neither ordered this certificate nor holds a valid authorization for %s", s.accountURL(ctx, req.Account.ID), name.Value)
		}
	}
	return nil
}
