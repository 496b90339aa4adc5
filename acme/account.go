package acme

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/mail"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/acmeca/caddy-acmeca/storage"
)

// maxContacts bounds the contact list of an account.
const maxContacts = 10

// accountObject is the RFC 8555 §7.1.2 account as sent to clients.
type accountObject struct {
	Status               string           `json:"status"`
	Contact              []string         `json:"contact,omitempty"`
	TermsOfServiceAgreed bool             `json:"termsOfServiceAgreed,omitempty"`
	Orders               string           `json:"orders"`
	Key                  *jose.JSONWebKey `json:"key,omitempty"`
	CreatedAt            string           `json:"createdAt,omitempty"`
}

func (s *Server) accountObject(ctx context.Context, a *storage.Account) accountObject {
	var key jose.JSONWebKey
	obj := accountObject{
		Status:               a.Status,
		Contact:              a.Contact,
		TermsOfServiceAgreed: a.TermsAgreed,
		Orders:               s.accountURL(ctx, a.ID) + "/orders",
		CreatedAt:            a.CreatedAt.UTC().Format(timeFormat),
	}
	if key.UnmarshalJSON(a.Key) == nil {
		obj.Key = &key
	}
	return obj
}

type newAccountPayload struct {
	Contact              []string        `json:"contact"`
	TermsOfServiceAgreed bool            `json:"termsOfServiceAgreed"`
	OnlyReturnExisting   bool            `json:"onlyReturnExisting"`
	ExternalAccount      json.RawMessage `json:"externalAccountBinding"`
}

func (s *Server) handleNewAccount(w http.ResponseWriter, r *http.Request, req *signedRequest, _ []string) *Problem {
	ctx := r.Context()
	var pl newAccountPayload
	if p := decodePayload(req.Payload, &pl); p != nil {
		return p
	}
	thumb, err := thumbprint(req.JWK)
	if err != nil {
		return NewProblem(ErrBadPublicKey, "cannot compute the key's thumbprint: %v", err)
	}

	// One key, one account: serialise creation for this key in-process.
	defer s.Shared.lock("key:" + thumb)()

	if existing, p := s.accountByThumbprint(ctx, thumb); p != nil {
		return p
	} else if existing != nil {
		if existing.Status != storage.StatusValid {
			return Unauthorized("the account for this key is %s", existing.Status)
		}
		w.Header().Set("Location", s.accountURL(ctx, existing.ID))
		s.writeJSON(w, r, http.StatusOK, s.accountObject(ctx, existing))
		return nil
	}
	if pl.OnlyReturnExisting {
		return NewProblem(ErrAccountDoesNotExist, "no account exists for this key")
	}
	if s.TermsOfService != "" && !pl.TermsOfServiceAgreed {
		return Malformed("you must agree to the terms of service at %s (termsOfServiceAgreed: true)", s.TermsOfService)
	}
	contacts, p := checkContacts(pl.Contact)
	if p != nil {
		return p
	}
	keyJSON, err := req.JWK.MarshalJSON()
	if err != nil {
		return NewProblem(ErrBadPublicKey, "cannot encode the key: %v", err)
	}
	now := s.Now()
	// The account's ID comes from its key, so finding the account by key
	// is one Load and creating it one Store. Only when that ID is taken
	// (by an account that has since rolled over from this key) does the
	// account get a random ID and an index entry.
	id, indexed := accountIDFor(thumb), false
	if _, err := s.store.Account(ctx, id); err == nil {
		id, indexed = newID(), true
	} else if !errors.Is(err, storage.ErrNotFound) {
		s.logger.Error("loading account", errField(err))
		return Internal("could not create the account")
	}
	acct := &storage.Account{
		ID:          id,
		Status:      storage.StatusValid,
		Contact:     contacts,
		TermsAgreed: pl.TermsOfServiceAgreed,
		Key:         keyJSON,
		Thumbprint:  thumb,
		CreatedAt:   now,
	}
	// The record first, then the index that finds it: a crash between
	// leaves an unreachable record, never an index pointing nowhere.
	// Forget the cached copy after the write, so no request in between
	// caches the old one again.
	defer s.Shared.accounts.forget(acct.ID)
	if err := s.store.PutAccount(ctx, acct); err != nil {
		s.logger.Error("storing account", errField(err))
		return Internal("could not store the account")
	}
	if indexed {
		if err := s.store.PutAccountKey(ctx, thumb, acct.ID); err != nil {
			s.logger.Error("storing account key index", errField(err))
			return Internal("could not store the account")
		}
	}
	w.Header().Set("Location", s.accountURL(ctx, acct.ID))
	s.writeJSON(w, r, http.StatusCreated, s.accountObject(ctx, acct))
	return nil
}

// accountIDFor derives an account's ID from its key's thumbprint: the
// first 128 bits, base64url.
func accountIDFor(thumb string) string {
	b, err := base64.RawURLEncoding.DecodeString(thumb)
	if err != nil || len(b) < 16 {
		return newID()
	}
	return base64.RawURLEncoding.EncodeToString(b[:16])
}

// accountByThumbprint returns the account using a key, or nil: first the
// account whose ID the key derives, then the index kept for keys that
// arrived by key change or whose derived ID was taken.
func (s *Server) accountByThumbprint(ctx context.Context, thumb string) (*storage.Account, *Problem) {
	acct, err := s.store.Account(ctx, accountIDFor(thumb))
	if err == nil && acct.Thumbprint == thumb {
		return acct, nil
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.logger.Error("loading account", errField(err))
		return nil, Internal("could not look up the account")
	}
	id, err := s.store.AccountIDByThumbprint(ctx, thumb)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		s.logger.Error("looking up account key", errField(err))
		return nil, Internal("could not look up the account")
	}
	acct, err = s.store.Account(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		s.logger.Error("loading account", errField(err))
		return nil, Internal("could not load the account")
	}
	if acct.Thumbprint != thumb { // the index is stale after a key change
		return nil, nil
	}
	return acct, nil
}

// checkContacts accepts only mailto: URIs with one plain address each.
func checkContacts(contacts []string) ([]string, *Problem) {
	if len(contacts) > maxContacts {
		return nil, NewProblem(ErrInvalidContact, "too many contacts (%d); at most %d are allowed", len(contacts), maxContacts)
	}
	out := make([]string, 0, len(contacts))
	for _, c := range contacts {
		scheme, addr, ok := strings.Cut(c, ":")
		if !ok || !strings.EqualFold(scheme, "mailto") {
			return nil, NewProblem(ErrUnsupportedContact, "contact %q is not supported: only mailto: URIs are", c)
		}
		if addr == "" || strings.ContainsAny(addr, "?,;<> \t\r\n") {
			return nil, NewProblem(ErrInvalidContact, "contact %q must be mailto: followed by exactly one email address, without parameters", c)
		}
		parsed, err := mail.ParseAddress(addr)
		if err != nil || parsed.Address != addr || parsed.Name != "" {
			return nil, NewProblem(ErrInvalidContact, "contact %q is not a valid email address", c)
		}
		at := strings.LastIndex(addr, "@")
		if reason := checkDNSName(strings.ToLower(addr[at+1:])); reason != "" || strings.HasPrefix(addr[at+1:], "*") {
			return nil, NewProblem(ErrInvalidContact, "contact %q must have a fully qualified domain name after @ (%s)", c, reason)
		}
		out = append(out, "mailto:"+addr)
	}
	return out, nil
}

type accountUpdatePayload struct {
	Contact              *[]string `json:"contact"`
	Status               string    `json:"status"`
	TermsOfServiceAgreed bool      `json:"termsOfServiceAgreed"`
}

// handleAccount reads (POST-as-GET), updates or deactivates an account.
func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request, req *signedRequest, args []string) *Problem {
	ctx := r.Context()
	if args[0] != req.Account.ID {
		return Unauthorized("the request is signed by account %s, not by %s", s.accountURL(ctx, req.Account.ID), s.accountURL(ctx, args[0]))
	}
	if req.PostAsGet {
		s.writeJSON(w, r, http.StatusOK, s.accountObject(ctx, req.Account))
		return nil
	}
	var pl accountUpdatePayload
	if p := decodePayload(req.Payload, &pl); p != nil {
		return p
	}
	defer s.Shared.lock("account:" + req.Account.ID)()
	acct, err := s.store.Account(ctx, req.Account.ID)
	if err != nil {
		s.logger.Error("loading account", errField(err))
		return Internal("could not load the account")
	}
	switch pl.Status {
	case "":
	case storage.StatusDeactivated:
		acct.Status = storage.StatusDeactivated
	default:
		return Malformed("an account's status can only be changed to %q, not %q", storage.StatusDeactivated, pl.Status)
	}
	if pl.Contact != nil {
		contacts, p := checkContacts(*pl.Contact)
		if p != nil {
			return p
		}
		acct.Contact = contacts
	}
	if pl.TermsOfServiceAgreed {
		acct.TermsAgreed = true
	}
	acct.UpdatedAt = s.Now()
	// Forget the cached copy after the write, so no request in between
	// caches the old one again.
	defer s.Shared.accounts.forget(acct.ID)
	if err := s.store.PutAccount(ctx, acct); err != nil {
		s.logger.Error("storing account", errField(err))
		return Internal("could not store the account")
	}
	s.writeJSON(w, r, http.StatusOK, s.accountObject(ctx, acct))
	return nil
}

type keyChangePayload struct {
	Account string          `json:"account"`
	OldKey  json.RawMessage `json:"oldKey"`
}

// handleKeyChange rolls an account over to a new key (RFC 8555 §7.3.5).
func (s *Server) handleKeyChange(w http.ResponseWriter, r *http.Request, req *signedRequest, _ []string) *Problem {
	ctx := r.Context()
	if req.PostAsGet {
		return Malformed("keyChange needs the inner JWS as its payload")
	}
	inner, p := s.verifyJWS(ctx, req.Payload, req.URL, useJWK, false)
	if p != nil {
		p.Detail = "inner JWS: " + p.Detail
		return p
	}
	var pl keyChangePayload
	if p := decodePayload(inner.Payload, &pl); p != nil {
		return p
	}
	acctURL := s.accountURL(ctx, req.Account.ID)
	if pl.Account != acctURL {
		return Malformed("inner JWS \"account\" is %q but the outer JWS is signed by %s", pl.Account, acctURL)
	}
	var oldKey jose.JSONWebKey
	if err := oldKey.UnmarshalJSON(pl.OldKey); err != nil {
		return Malformed("inner JWS \"oldKey\" is not a JWK: %v", err)
	}
	oldThumb, err := thumbprint(&oldKey)
	if err != nil || oldThumb != req.Account.Thumbprint {
		return Malformed("inner JWS \"oldKey\" is not the account's current key")
	}
	newThumb, err := thumbprint(inner.JWK)
	if err != nil {
		return NewProblem(ErrBadPublicKey, "cannot compute the new key's thumbprint: %v", err)
	}
	if newThumb == oldThumb {
		return Malformed("the new key is the account's current key")
	}

	// Lock the new key's thumbprint so no account is created with it
	// meanwhile, and the account against a concurrent update.
	defer s.Shared.lock("key:" + newThumb)()
	defer s.Shared.lock("account:" + req.Account.ID)()
	if other, p := s.accountByThumbprint(ctx, newThumb); p != nil {
		return p
	} else if other != nil {
		p := Malformed("the new key is already in use by account %s", s.accountURL(ctx, other.ID)).WithStatus(http.StatusConflict)
		p.location = s.accountURL(ctx, other.ID)
		return p
	}
	acct, err := s.store.Account(ctx, req.Account.ID)
	if err != nil {
		s.logger.Error("loading account", errField(err))
		return Internal("could not load the account")
	}
	// Another key change may have won while this one waited for the lock:
	// the old key must still be the account's.
	if acct.Thumbprint != oldThumb || acct.Status != storage.StatusValid {
		return Malformed("the account's key changed (or the account was deactivated) while this key change was processed; oldKey is no longer its key")
	}
	keyJSON, err := inner.JWK.MarshalJSON()
	if err != nil {
		return NewProblem(ErrBadPublicKey, "cannot encode the new key: %v", err)
	}
	acct.Key, acct.Thumbprint, acct.UpdatedAt = keyJSON, newThumb, s.Now()
	// Index first, record second, old index last: at every step some
	// index finds the account, and a stale index is ignored because the
	// record's thumbprint no longer matches.
	if err := s.store.PutAccountKey(ctx, newThumb, acct.ID); err != nil {
		s.logger.Error("storing account key index", errField(err))
		return Internal("could not store the new key")
	}
	// Forget the cached copy after the write, so no request in between
	// caches the old one again.
	defer s.Shared.accounts.forget(acct.ID)
	if err := s.store.PutAccount(ctx, acct); err != nil {
		s.logger.Error("storing account", errField(err))
		return Internal("could not store the new key")
	}
	if err := s.store.DeleteAccountKey(ctx, oldThumb); err != nil {
		s.logger.Warn("deleting old account key index", errField(err))
	}
	s.writeJSON(w, r, http.StatusOK, s.accountObject(ctx, acct))
	return nil
}

type ordersList struct {
	Orders []string `json:"orders"`
}

// handleAccountOrders lists an account's orders (RFC 8555 §7.1.2.1).
func (s *Server) handleAccountOrders(w http.ResponseWriter, r *http.Request, req *signedRequest, args []string) *Problem {
	ctx := r.Context()
	if args[0] != req.Account.ID {
		return Unauthorized("only the account itself may list its orders")
	}
	ids, err := s.store.AccountOrders(ctx, req.Account.ID)
	if err != nil {
		s.logger.Error("listing orders", errField(err))
		return Internal("could not list the orders")
	}
	list := ordersList{Orders: make([]string, 0, len(ids))}
	now := s.Now()
	for _, id := range ids {
		o, err := s.store.Order(ctx, id)
		if err != nil {
			continue
		}
		// §7.1.2.1: the list holds pending, ready and processing orders
		// (valid ones too, as Boulder and Pebble do), not expired ones.
		if o.Status == storage.StatusInvalid || (o.Status != storage.StatusValid && now.After(o.Expires)) {
			continue
		}
		list.Orders = append(list.Orders, s.resourceURL(ctx, "order", id))
	}
	s.writeJSON(w, r, http.StatusOK, list)
	return nil
}
