package acme

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/acmeca/caddy-acmeca/ratelimit"
	"github.com/acmeca/caddy-acmeca/storage"
	"github.com/acmeca/caddy-acmeca/validate"
)

// validationTimeout caps one validation, whatever the validator's own
// timeouts say.
const validationTimeout = 90 * time.Second

type authzObject struct {
	Identifier storage.Identifier `json:"identifier"`
	Status     string             `json:"status"`
	Expires    string             `json:"expires"`
	Challenges []challengeObject  `json:"challenges"`
	Wildcard   bool               `json:"wildcard,omitempty"`
}

type challengeObject struct {
	Type      string   `json:"type"`
	URL       string   `json:"url"`
	Token     string   `json:"token"`
	Status    string   `json:"status"`
	Validated string   `json:"validated,omitempty"`
	Error     *Problem `json:"error,omitempty"`
}

// authzStatus is an authorization's status now (a pending or valid one
// past its expiry is expired).
func authzStatus(a *storage.Authorization, now time.Time) string {
	if (a.Status == storage.StatusPending || a.Status == storage.StatusValid) && now.After(a.Expires) {
		return storage.StatusExpired
	}
	return a.Status
}

func (s *Server) authzObject(ctx context.Context, a *storage.Authorization) authzObject {
	status := authzStatus(a, s.Now())
	obj := authzObject{
		Identifier: a.Identifier,
		Status:     status,
		Expires:    a.Expires.UTC().Format(timeFormat),
		Wildcard:   a.Wildcard,
		Challenges: []challengeObject{},
	}
	for _, c := range a.Challenges {
		// §7.1.4: a final authorization lists the challenges that were
		// tried, not the untouched ones.
		if (status == storage.StatusValid || status == storage.StatusInvalid) && c.Status == storage.StatusPending {
			continue
		}
		obj.Challenges = append(obj.Challenges, s.challengeObject(ctx, a, c))
	}
	return obj
}

func (s *Server) challengeObject(ctx context.Context, a *storage.Authorization, c storage.Challenge) challengeObject {
	obj := challengeObject{
		Type:   c.Type,
		URL:    s.resourceURL(ctx, "chall", a.ID, c.Type),
		Token:  c.Token,
		Status: c.Status,
		Error:  fromStored(c.Error),
	}
	if !c.Validated.IsZero() {
		obj.Validated = c.Validated.UTC().Format(timeFormat)
	}
	return obj
}

func (s *Server) loadOwnAuthz(ctx context.Context, req *signedRequest, id string) (*storage.Authorization, *Problem) {
	a, err := s.store.Authorization(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, Malformed("authorization %s does not exist", id).WithStatus(http.StatusNotFound)
	}
	if err != nil {
		s.logger.Error("loading authorization", errField(err))
		return nil, Internal("could not load the authorization")
	}
	if a.AccountID != req.Account.ID {
		return nil, Unauthorized("authorization %s belongs to another account", id)
	}
	return a, nil
}

type authzUpdatePayload struct {
	Status string `json:"status"`
}

// handleAuthz reads an authorization (POST-as-GET) or deactivates it.
func (s *Server) handleAuthz(w http.ResponseWriter, r *http.Request, req *signedRequest, args []string) *Problem {
	ctx := r.Context()
	if req.PostAsGet {
		a, p := s.loadOwnAuthz(ctx, req, args[0])
		if p != nil {
			return p
		}
		s.resumeStale(ctx, a)
		if authzStatus(a, s.Now()) == storage.StatusPending {
			w.Header().Set("Retry-After", "1")
		}
		s.writeJSON(w, r, http.StatusOK, s.authzObject(ctx, a))
		return nil
	}
	var pl authzUpdatePayload
	if p := decodePayload(req.Payload, &pl); p != nil {
		return p
	}
	if pl.Status != storage.StatusDeactivated {
		return Malformed("an authorization's status can only be changed to %q, not %q", storage.StatusDeactivated, pl.Status)
	}
	defer s.Shared.lock("authz:" + args[0])()
	a, p := s.loadOwnAuthz(ctx, req, args[0])
	if p != nil {
		return p
	}
	if st := authzStatus(a, s.Now()); st != storage.StatusPending && st != storage.StatusValid {
		return Malformed("authorization is %s; only pending or valid authorizations can be deactivated", st)
	}
	a.Status = storage.StatusDeactivated
	if err := s.store.PutAuthorization(ctx, a); err != nil {
		s.logger.Error("storing authorization", errField(err))
		return Internal("could not store the authorization")
	}
	s.afterValidation(ctx, a)
	s.writeJSON(w, r, http.StatusOK, s.authzObject(ctx, a))
	return nil
}

// handleChallenge reads a challenge (POST-as-GET) or, with a JSON object
// payload, asks the CA to validate it (RFC 8555 §7.5.1).
func (s *Server) handleChallenge(w http.ResponseWriter, r *http.Request, req *signedRequest, args []string) *Problem {
	ctx := r.Context()
	authzID, typ := args[0], args[1]
	respond := func(a *storage.Authorization, c storage.Challenge) *Problem {
		w.Header().Add("Link", link(s.resourceURL(ctx, "authz", a.ID), "up"))
		if c.Status == storage.StatusProcessing || c.Status == storage.StatusPending {
			w.Header().Set("Retry-After", "1")
		}
		s.writeJSON(w, r, http.StatusOK, s.challengeObject(ctx, a, c))
		return nil
	}
	find := func(a *storage.Authorization) int {
		for i, c := range a.Challenges {
			if c.Type == typ {
				return i
			}
		}
		return -1
	}

	if req.PostAsGet {
		a, p := s.loadOwnAuthz(ctx, req, authzID)
		if p != nil {
			return p
		}
		i := find(a)
		if i < 0 {
			return Malformed("authorization %s has no %s challenge", authzID, typ).WithStatus(http.StatusNotFound)
		}
		s.resumeStale(ctx, a)
		return respond(a, a.Challenges[i])
	}

	unlock := s.Shared.lock("authz:" + authzID)
	a, p := s.loadOwnAuthz(ctx, req, authzID)
	if p != nil {
		unlock()
		return p
	}
	i := find(a)
	if i < 0 {
		unlock()
		return Malformed("authorization %s has no %s challenge", authzID, typ).WithStatus(http.StatusNotFound)
	}
	c := a.Challenges[i]
	if c.Status != storage.StatusPending || hasProcessing(a) {
		// Already answered or being validated: report where it stands.
		unlock()
		return respond(a, c)
	}
	if st := authzStatus(a, s.Now()); st != storage.StatusPending {
		unlock()
		return Malformed("authorization for %s is %s; its challenges can no longer be answered", a.Identifier.Value, st)
	}
	unlock()

	// Most validations take milliseconds: wait briefly for the result, so
	// the common case costs one storage write (the result) and the client
	// sees the final state at once. A slower one is recorded as processing
	// and finishes in the background (RFC 8555 §7.5.1).
	j := s.job(ctx, a, typ)
	j.thumbprint = req.Account.Thumbprint
	done := s.startValidation(j)
	if done == nil { // already being validated in this process
		return s.challengeNow(w, r, req, authzID, typ, respond, find)
	}
	select {
	case final := <-done:
		if final != nil {
			if k := find(final); k >= 0 {
				return respond(final, final.Challenges[k])
			}
		}
		return s.challengeNow(w, r, req, authzID, typ, respond, find)
	case <-time.After(syncValidationWait):
	}
	if p := s.markProcessing(ctx, authzID, typ); p != nil {
		return p
	}
	return s.challengeNow(w, r, req, authzID, typ, respond, find)
}

// syncValidationWait is how long a challenge response waits for its
// validation before answering "processing".
const syncValidationWait = 300 * time.Millisecond

// challengeNow answers with the challenge as stored now.
func (s *Server) challengeNow(w http.ResponseWriter, r *http.Request, req *signedRequest, authzID, typ string,
	respond func(*storage.Authorization, storage.Challenge) *Problem, find func(*storage.Authorization) int) *Problem {
	a, p := s.loadOwnAuthz(r.Context(), req, authzID)
	if p != nil {
		return p
	}
	i := find(a)
	if i < 0 {
		return Internal("challenge vanished")
	}
	c := a.Challenges[i]
	if c.Status == storage.StatusPending {
		if _, busy := s.Shared.inflight.Load(authzID); busy {
			c.Status = storage.StatusProcessing // being validated right now
		}
	}
	return respond(a, c)
}

// markProcessing records that a challenge is being validated, unless the
// validation has finished meanwhile; a process that stops before the
// result is stored leaves it to be taken up again (resumeStale).
func (s *Server) markProcessing(ctx context.Context, authzID, typ string) *Problem {
	defer s.Shared.lock("authz:" + authzID)()
	a, err := s.store.Authorization(ctx, authzID)
	if err != nil {
		s.logger.Error("loading authorization", errField(err))
		return Internal("could not load the authorization")
	}
	for i := range a.Challenges {
		c := &a.Challenges[i]
		if c.Type == typ && c.Status == storage.StatusPending && a.Status == storage.StatusPending {
			c.Status, c.ProcessingSince = storage.StatusProcessing, s.Now()
			if err := s.store.PutAuthorization(ctx, a); err != nil {
				s.logger.Error("storing authorization", errField(err))
				return Internal("could not store the challenge")
			}
		}
	}
	return nil
}

// resumeStale restarts a validation that a stopped process left in
// processing.
func (s *Server) resumeStale(ctx context.Context, a *storage.Authorization) {
	for _, c := range a.Challenges {
		if c.Status == storage.StatusProcessing && s.Now().Sub(c.ProcessingSince) > staleAfter {
			s.startValidation(s.job(ctx, a, c.Type))
		}
	}
}

// startValidation validates a challenge in the background, at most once at
// a time per authorization in this process. It outlives the request and a
// config reload; a clean stop waits for it (see Shared.Close).
//
// The channel delivers the authorization as stored after the validation
// (nil if it could not be stored); startValidation returns nil when the
// authorization is already being validated here.
func (s *Server) startValidation(j validationJob) <-chan *storage.Authorization {
	if _, busy := s.Shared.inflight.LoadOrStore(j.authzID, struct{}{}); busy {
		return nil
	}
	done := make(chan *storage.Authorization, 1)
	s.Shared.validations.Add(1)
	go func() {
		defer s.Shared.validations.Done()
		defer s.Shared.inflight.Delete(j.authzID)
		ctx, cancel := context.WithTimeout(context.Background(), validationTimeout)
		defer cancel()
		done <- s.validate(ctx, j)
	}()
	return done
}

// validationJob is what a background validation needs from the request
// that started it.
type validationJob struct {
	authzID, typ  string
	accountURL    string
	caaIdentities []string
	// What the request already had, so the validation need not load it
	// again: the authorization (its identifier and tokens do not change)
	// and the account key's thumbprint (empty: load the account).
	authz      *storage.Authorization
	thumbprint string
}

func (s *Server) job(ctx context.Context, a *storage.Authorization, typ string) validationJob {
	return validationJob{
		authzID:       a.ID,
		typ:           typ,
		authz:         a,
		accountURL:    s.accountURL(ctx, a.AccountID),
		caaIdentities: s.caaIdentities(ctx),
	}
}

// caaIdentities are the issuer domain names CAA records must name. They
// come from the configuration only, never from the request: a client
// choosing the Host header must not choose which CA's CAA records count.
func (s *Server) caaIdentities(context.Context) []string { return s.CAAIdentities }

// checkCAA applies CAA to a dns authorization proven by method.
func (s *Server) checkCAA(ctx context.Context, a *storage.Authorization, method, accountURL string, identities []string) error {
	if !s.CAA || a.Identifier.Type != "dns" {
		return nil
	}
	return validate.CheckCAA(ctx, s.Resolver, validate.CAACheck{
		Name:       a.Identifier.Value,
		Wildcard:   a.Wildcard,
		Identities: identities,
		AccountURL: accountURL,
		Method:     method,
	})
}

// validate runs the validator and CAA, stores the result and returns the
// authorization as stored (nil if it could not be).
func (s *Server) validate(ctx context.Context, j validationJob) *storage.Authorization {
	authzID, typ := j.authzID, j.typ
	log := s.logger.With(zap.String("authz", authzID), zap.String("challenge", typ))
	a := j.authz
	if a == nil {
		var err error
		if a, err = s.store.Authorization(ctx, authzID); err != nil {
			log.Error("loading authorization for validation", errField(err))
			return nil
		}
	}
	thumbprint := j.thumbprint
	if thumbprint == "" {
		acct, err := s.store.Account(ctx, a.AccountID)
		if err != nil {
			log.Error("loading account for validation", errField(err))
			return nil
		}
		thumbprint = acct.Thumbprint
	}
	var token string
	for _, c := range a.Challenges {
		if c.Type == typ {
			token = c.Token
		}
	}

	// CAA is looked up while the challenge is checked, as Boulder does: the
	// validation then takes the longer of the two, not their sum. Its
	// result counts only if the challenge succeeds, so a CAA refusal
	// never hides a failed challenge.
	caaDone := make(chan error, 1)
	go func() { caaDone <- s.checkCAA(ctx, a, typ, j.accountURL, j.caaIdentities) }()

	var verr error
	validator, ok := s.Validators[typ]
	if !ok {
		verr = validate.Problemf(validate.ProblemServerInternal, "challenge type %s is no longer offered by this CA", typ)
	} else {
		verr = validator.Validate(ctx, validate.Challenge{
			Type:             typ,
			Identifier:       validate.Identifier{Type: a.Identifier.Type, Value: a.Identifier.Value},
			Token:            token,
			KeyAuthorization: token + "." + thumbprint,
			AccountURL:       j.accountURL,
			Resolver:         s.Resolver,
		})
	}
	if caaErr := <-caaDone; verr == nil {
		verr = caaErr
	}

	defer s.Shared.lock("authz:" + authzID)()
	a, err := s.store.Authorization(ctx, authzID)
	if err != nil {
		log.Error("reloading authorization after validation", errField(err))
		return nil
	}
	now := s.Now()
	changed := false
	for i := range a.Challenges {
		c := &a.Challenges[i]
		// Pending when the result came within the request's wait, so
		// processing was never stored.
		if c.Type != typ || (c.Status != storage.StatusProcessing && c.Status != storage.StatusPending) {
			continue
		}
		switch {
		case a.Status == storage.StatusDeactivated:
			c.Status = storage.StatusInvalid
			c.Error = Malformed("the authorization was deactivated while the challenge was validated").stored()
		case a.Status != storage.StatusPending:
			continue // settled meanwhile by another challenge
		case verr == nil:
			c.Status, c.Validated = storage.StatusValid, now
			a.Status, a.ValidatedAt = storage.StatusValid, now
			a.Expires = now.Add(s.ValidAuthzLifetime)
			log.Info("challenge valid", zap.String("identifier", a.Identifier.Value))
		default:
			c.Status = storage.StatusInvalid
			c.Error = problemFromValidation(verr).stored()
			a.Status = storage.StatusInvalid
			log.Info("challenge failed", zap.String("identifier", a.Identifier.Value), zap.Error(verr))
		}
		changed = true
	}
	if !changed {
		return a
	}
	if err := s.store.PutAuthorization(ctx, a); err != nil {
		log.Error("storing validation result", errField(err))
		return nil
	}
	s.afterValidation(ctx, a)
	return a
}

// afterValidation counts a failed validation against the account and
// hostname.
func (s *Server) afterValidation(ctx context.Context, a *storage.Authorization) {
	// Leaving the pending state needs no write to the pending-authorization
	// bucket: the next spend that finds it full asks which of its items are
	// still pending (see pendingTransaction).
	if a.Status != storage.StatusInvalid {
		return
	}
	failed := ratelimit.Transaction{
		Limit:   ratelimit.FailedValidations,
		Key:     ratelimit.FailedValidationKey(a.AccountID, a.Identifier.Value),
		Account: a.AccountID,
	}
	// A refusal here only means the bucket is already full; the next
	// newOrder for the name is refused either way.
	if _, err := s.Limiter.Spend(ctx, []ratelimit.Transaction{failed}); err != nil {
		s.logger.Warn("counting failed validation", errField(err))
	}
}

// problemFromValidation maps a validator's error to an ACME problem.
func problemFromValidation(err error) *Problem {
	var vp *validate.Problem
	if errors.As(err, &vp) {
		return NewProblem(vp.Type, "%s", vp.Detail)
	}
	return NewProblem(ErrServerInternal, "validation failed: %v", err)
}
