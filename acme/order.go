package acme

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/acmeca/caddy-acmeca/ratelimit"
	"github.com/acmeca/caddy-acmeca/storage"
)

const timeFormat = time.RFC3339

type orderObject struct {
	Status         string               `json:"status"`
	Expires        string               `json:"expires"`
	Identifiers    []storage.Identifier `json:"identifiers"`
	Authorizations []string             `json:"authorizations"`
	Finalize       string               `json:"finalize"`
	Certificate    string               `json:"certificate,omitempty"`
	Error          *Problem             `json:"error,omitempty"`
}

type newOrderPayload struct {
	Identifiers []storage.Identifier `json:"identifiers"`
	NotBefore   string               `json:"notBefore"`
	NotAfter    string               `json:"notAfter"`
}

func (s *Server) handleNewOrder(w http.ResponseWriter, r *http.Request, req *signedRequest, _ []string) *Problem {
	ctx := r.Context()
	var pl newOrderPayload
	if p := decodePayload(req.Payload, &pl); p != nil {
		return p
	}
	if pl.NotBefore != "" || pl.NotAfter != "" {
		return Malformed("this CA does not support notBefore/notAfter in orders; leave them out and the certificate is valid from issuance for the CA's configured lifetime")
	}
	idents, p := normalizeIdentifiers(pl.Identifiers, s.Policy)
	if p != nil {
		return p
	}

	now := s.Now()
	if p := s.checkOrderLimits(ctx, req.Account, idents); p != nil {
		return p
	}
	order := &storage.Order{
		ID:          storage.OrderID(req.Account.ID, newID()),
		AccountID:   req.Account.ID,
		Status:      storage.StatusPending,
		Identifiers: idents,
		Expires:     now.Add(s.OrderLifetime),
		CreatedAt:   now,
	}
	// One newOrder per account at a time in this process, so two orders
	// for the same name do not both create its authorization.
	defer s.Shared.lock("new-order:" + req.Account.ID)()
	authzs := make([]*storage.Authorization, len(idents))
	var fresh []*storage.Authorization
	for i, id := range idents {
		a, derivedFree, p := s.reusableAuthorization(ctx, req.Account, id, now)
		if p != nil {
			return p
		}
		if a == nil {
			if a, p = s.newAuthorization(req.Account, id, now, derivedFree); p != nil {
				return p
			}
			fresh = append(fresh, a)
		}
		authzs[i] = a
	}
	for _, a := range authzs {
		order.AuthzIDs = append(order.AuthzIDs, a.ID)
		if a.Expires.Before(order.Expires) {
			order.Expires = a.Expires
		}
	}
	if p := s.storeOrder(ctx, req.Account, order, fresh); p != nil {
		return p
	}
	known := make(map[string]*storage.Authorization, len(authzs))
	for _, a := range authzs {
		known[a.ID] = a
	}
	obj, p := s.orderObjectWith(ctx, order, known)
	if p != nil {
		return p
	}
	w.Header().Set("Location", s.resourceURL(ctx, "order", order.ID))
	s.writeJSON(w, r, http.StatusCreated, obj)
	return nil
}

// checkOrderLimits tells a subscriber before any validation whether the
// certificate could be issued (certificates per registered domain,
// duplicates) and whether its names are blocked by failed validations, as
// Boulder does. Nothing is spent here.
func (s *Server) checkOrderLimits(ctx context.Context, acct *storage.Account, idents []storage.Identifier) *Problem {
	names := make([]string, len(idents))
	txns := make([]ratelimit.Transaction, 0, len(idents)+2)
	for i, id := range idents {
		names[i] = id.Value
		txns = append(txns, ratelimit.Transaction{
			Limit:   ratelimit.FailedValidations,
			Key:     ratelimit.FailedValidationKey(acct.ID, strings.TrimPrefix(id.Value, "*.")),
			Account: acct.ID,
		})
	}
	txns = append(txns, ratelimit.CertificateTransactions(acct.ID, names)...)
	return s.limit(ctx, txns, false)
}

// limit checks (or spends) transactions and turns a refusal into a
// rateLimited problem.
func (s *Server) limit(ctx context.Context, txns []ratelimit.Transaction, spend bool) *Problem {
	check := s.Limiter.Check
	if spend {
		check = s.Limiter.Spend
	}
	denial, err := check(ctx, txns)
	if err != nil {
		s.logger.Error("checking rate limits", errField(err))
		return Internal("could not check rate limits; retry later")
	}
	if denial == nil {
		return nil
	}
	p := NewProblem(ErrRateLimited, "%s", denial.Detail())
	p.retryAfter = int(denial.RetryAfter.Sub(s.Now()).Seconds() + 0.999)
	if p.retryAfter < 1 {
		p.retryAfter = 1
	}
	return p
}

// derivedAuthzID is the ID an account's first authorization for an
// identifier takes. Being known from the account and the identifier, it
// needs no index entry: only later authorizations for the same identifier
// (after the first failed or expired) get a random ID and an index entry.
func derivedAuthzID(accountID string, id storage.Identifier) string {
	sum := sha256.Sum256([]byte(accountID + "\x00" + identKey(id)))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// latestAuthorization finds the account's latest authorization for an
// identifier: the one the index names, else the one at the derived ID.
// derivedFree says that no authorization has taken the derived ID yet.
func (s *Server) latestAuthorization(ctx context.Context, accountID string, id storage.Identifier) (latest *storage.Authorization, derivedFree bool, err error) {
	authzID, err := s.store.ReusableAuthorizationID(ctx, accountID, identKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		authzID = derivedAuthzID(accountID, id)
	} else if err != nil {
		return nil, false, err
	}
	a, err := s.store.Authorization(ctx, authzID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, authzID == derivedAuthzID(accountID, id), nil
	}
	if err != nil {
		return nil, false, err
	}
	return a, false, nil
}

// reusableAuthorization returns the account's authorization for an
// identifier while it stays pending or valid for at least reuseMargin, or
// nil, and whether a new one may take the derived ID.
func (s *Server) reusableAuthorization(ctx context.Context, acct *storage.Account, id storage.Identifier, now time.Time) (*storage.Authorization, bool, *Problem) {
	a, derivedFree, err := s.latestAuthorization(ctx, acct.ID, id)
	if err != nil {
		s.logger.Error("looking up reusable authorization", errField(err))
		return nil, false, Internal("could not look up authorizations")
	}
	if a != nil && a.Expires.After(now.Add(reuseMargin)) &&
		(a.Status == storage.StatusValid || (a.Status == storage.StatusPending && !hasProcessing(a))) {
		return a, false, nil
	}
	return nil, derivedFree, nil
}

// newAuthorization builds (but does not store) a pending authorization with
// one challenge per offered type.
func (s *Server) newAuthorization(acct *storage.Account, id storage.Identifier, now time.Time, derived bool) (*storage.Authorization, *Problem) {
	wildcard := id.Type == "dns" && strings.HasPrefix(id.Value, "*.")
	authzID := newID()
	if derived {
		authzID = derivedAuthzID(acct.ID, id)
	}
	a := &storage.Authorization{
		ID:         authzID,
		AccountID:  acct.ID,
		Identifier: storage.Identifier{Type: id.Type, Value: strings.TrimPrefix(id.Value, "*.")},
		Wildcard:   wildcard,
		Status:     storage.StatusPending,
		Expires:    now.Add(s.PendingAuthzLifetime),
		CreatedAt:  now,
	}
	for _, typ := range s.challOrder {
		// RFC 8555 §7.1.3: wildcard names are proven by dns-01 alone;
		// RFC 8738 §7: IP addresses by http-01 and tls-alpn-01, never dns-01.
		if (wildcard && typ != "dns-01") || (id.Type == "ip" && typ == "dns-01") {
			continue
		}
		a.Challenges = append(a.Challenges, storage.Challenge{Type: typ, Token: newToken(), Status: storage.StatusPending})
	}
	if len(a.Challenges) == 0 {
		return nil, NewProblem(ErrRejectedIdentifier, "this CA offers no challenge type that can prove control of %q", id.Value)
	}
	return a, nil
}

// pendingTransaction is the pending_authorizations spend (or refund) for
// authorizations of one account.
func (s *Server) pendingTransaction(ctx context.Context, accountID string, authzs ...*storage.Authorization) ratelimit.Transaction {
	t := ratelimit.Transaction{Limit: ratelimit.PendingAuthorizations, Key: accountID, Account: accountID, Cost: len(authzs)}
	t.StillCounts = func(id string) bool {
		a, err := s.store.Authorization(ctx, id)
		if errors.Is(err, storage.ErrNotFound) {
			return false
		}
		// On a storage error the item keeps counting: refusing wrongly
		// is better than letting an account past its limit.
		return err != nil || authzStatus(a, s.Now()) == storage.StatusPending
	}
	for _, a := range authzs {
		t.Items = append(t.Items, a.ID)
		t.Expires = a.Expires
	}
	return t
}

// storeOrder stores an order and its fresh authorizations while it spends
// the pending-authorization limit for them: the spend and the writes each
// wait on a disk sync, and running them together makes newOrder wait for
// one. If the limit refuses or a write fails, what was written is deleted
// and what was spent given back, so nothing is half-done.
func (s *Server) storeOrder(ctx context.Context, acct *storage.Account, order *storage.Order, fresh []*storage.Authorization) *Problem {
	var (
		txn      ratelimit.Transaction
		refused  *Problem
		spent    bool
		writeErr = make([]error, 1+len(fresh))
		wg       sync.WaitGroup
	)
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	if len(fresh) > 0 {
		txn = s.pendingTransaction(ctx, acct.ID, fresh...)
		run(func() {
			refused = s.limit(ctx, []ratelimit.Transaction{txn}, true)
			spent = refused == nil
		})
	}
	run(func() { writeErr[0] = s.store.PutOrder(ctx, order) })
	for i, a := range fresh {
		run(func() { writeErr[i+1] = s.store.PutAuthorization(ctx, a) })
	}
	wg.Wait()

	failed := errors.Join(writeErr...)
	if refused != nil || failed != nil {
		if failed != nil {
			s.logger.Error("storing order", errField(failed))
		}
		if err := s.store.DeleteOrder(ctx, order.ID); err != nil {
			s.logger.Warn("removing refused order", errField(err))
		}
		for _, a := range fresh {
			if err := s.store.DeleteAuthorization(ctx, a.ID); err != nil {
				s.logger.Warn("removing refused authorization", errField(err))
			}
		}
		if spent {
			if err := s.Limiter.Refund(ctx, []ratelimit.Transaction{txn}); err != nil {
				s.logger.Error("refunding pending authorizations", errField(err))
			}
		}
		if refused != nil {
			return refused
		}
		return Internal("could not store the order")
	}

	// Index entries only for authorizations that are not an account's
	// first for their name (rare), once the order is sure to stand.
	for _, a := range fresh {
		id := storage.Identifier{Type: a.Identifier.Type, Value: a.Identifier.Value}
		if a.Wildcard {
			id.Value = "*." + id.Value
		}
		if a.ID == derivedAuthzID(acct.ID, id) {
			continue // found without an index
		}
		if err := s.store.PutReusableAuthorizationID(ctx, acct.ID, identKey(id), a.ID); err != nil {
			s.logger.Warn("indexing authorization", errField(err))
		}
	}
	return nil
}

// identKey names an identifier in the authorization index: the name (with
// "*." for wildcards) or "ip:" and the address.
func identKey(id storage.Identifier) string {
	if id.Type == "ip" {
		return "ip:" + id.Value
	}
	return id.Value
}

func hasProcessing(a *storage.Authorization) bool {
	for _, c := range a.Challenges {
		if c.Status == storage.StatusProcessing {
			return true
		}
	}
	return false
}

// orderState works out an order's current status from its own record and
// its authorizations (RFC 8555 §7.1.6).
func (s *Server) orderState(ctx context.Context, o *storage.Order) (string, *Problem, *Problem) {
	return s.orderStateWith(ctx, o, nil)
}

// orderStateWith is orderState taking the authorizations a request already
// holds from known, and adding those it loads, so one request loads each
// authorization once.
func (s *Server) orderStateWith(ctx context.Context, o *storage.Order, known map[string]*storage.Authorization) (string, *Problem, *Problem) {
	now := s.Now()
	switch o.Status {
	case storage.StatusValid, storage.StatusInvalid:
		return o.Status, fromStored(o.Error), nil
	}
	// Anything but pending may mean the order was finalized: its
	// certificate (found by the serial the order determines) decides.
	issued := func() (bool, *Problem) {
		_, err := s.store.Certificate(ctx, s.orderSerial(o))
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			s.logger.Error("loading certificate", errField(err))
			return false, Internal("could not load the order's certificate")
		}
		return true, nil
	}
	var failed *Problem
	ready := true
	if now.After(o.Expires) {
		failed = NewProblem(ErrMalformed, "the order expired at %s before it was finalized", o.Expires.UTC().Format(timeFormat))
	} else {
		for _, id := range o.AuthzIDs {
			a, err := known[id], error(nil)
			if a == nil {
				a, err = s.store.Authorization(ctx, id)
			}
			if errors.Is(err, storage.ErrNotFound) {
				// Its write failed when the order was created.
				failed = Internal("an authorization of this order was lost; place a new order")
				break
			}
			if err != nil {
				s.logger.Error("loading authorization", errField(err))
				return "", nil, Internal("could not load the order's authorizations")
			}
			if known != nil {
				known[id] = a
			}
			s.resumeStale(ctx, a)
			switch st := authzStatus(a, now); st {
			case storage.StatusValid:
			case storage.StatusPending:
				ready = false
			default:
				failed = NewProblem(ErrUnauthorized, "authorization for %s is %s", a.Identifier.Value, st)
				for _, c := range a.Challenges {
					if c.Error != nil {
						failed = fromStored(c.Error)
						failed.Detail = "authorization for " + a.Identifier.Value + " failed: " + failed.Detail
					}
				}
			}
			if failed != nil {
				break
			}
		}
	}
	if failed == nil && !ready {
		return storage.StatusPending, nil, nil
	}
	done, p := issued()
	switch {
	case p != nil:
		return "", nil, p
	case done:
		return storage.StatusValid, nil, nil
	case failed != nil:
		return storage.StatusInvalid, failed, nil
	}
	return storage.StatusReady, nil, nil
}

// orderSerial is the serial (lower-case hex) of an order's certificate.
func (s *Server) orderSerial(o *storage.Order) string {
	return hex.EncodeToString(s.Shared.serialFor(o.ID).Bytes())
}

func (s *Server) orderObject(ctx context.Context, o *storage.Order) (*orderObject, *Problem) {
	return s.orderObjectWith(ctx, o, nil)
}

// orderObjectWith renders an order, taking authorizations from known.
func (s *Server) orderObjectWith(ctx context.Context, o *storage.Order, known map[string]*storage.Authorization) (*orderObject, *Problem) {
	status, orderErr, p := s.orderStateWith(ctx, o, known)
	if p != nil {
		return nil, p
	}
	return s.renderOrder(ctx, o, status, orderErr), nil
}

// renderOrder is the order object for a status already worked out.
func (s *Server) renderOrder(ctx context.Context, o *storage.Order, status string, orderErr *Problem) *orderObject {
	obj := &orderObject{
		Status:      status,
		Expires:     o.Expires.UTC().Format(timeFormat),
		Identifiers: o.Identifiers,
		Finalize:    s.resourceURL(ctx, "order", o.ID, "finalize"),
		Error:       orderErr,
	}
	for _, id := range o.AuthzIDs {
		obj.Authorizations = append(obj.Authorizations, s.resourceURL(ctx, "authz", id))
	}
	if status == storage.StatusValid {
		obj.Certificate = s.resourceURL(ctx, "cert", s.orderSerial(o))
	}
	return obj
}

// loadOwnOrder loads an order that must belong to the requesting account.
func (s *Server) loadOwnOrder(ctx context.Context, req *signedRequest, id string) (*storage.Order, *Problem) {
	o, err := s.store.Order(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, Malformed("order %s does not exist", id).WithStatus(http.StatusNotFound)
	}
	if err != nil {
		s.logger.Error("loading order", errField(err))
		return nil, Internal("could not load the order")
	}
	if o.AccountID != req.Account.ID {
		return nil, Unauthorized("order %s belongs to another account", id)
	}
	return o, nil
}

func (s *Server) handleOrder(w http.ResponseWriter, r *http.Request, req *signedRequest, args []string) *Problem {
	ctx := r.Context()
	if !req.PostAsGet {
		return Malformed("read an order with POST-as-GET (an empty payload)")
	}
	// Wait for a finalize in flight: its certificate is stored before its
	// limits are known to allow it.
	defer s.Shared.lock("order:" + args[0])()
	o, p := s.loadOwnOrder(ctx, req, args[0])
	if p != nil {
		return p
	}
	obj, p := s.orderObject(ctx, o)
	if p != nil {
		return p
	}
	if obj.Status == storage.StatusProcessing || obj.Status == storage.StatusPending {
		w.Header().Set("Retry-After", "1")
	}
	s.writeJSON(w, r, http.StatusOK, obj)
	return nil
}
