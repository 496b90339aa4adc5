package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// reqType is the kind of an ACME request, for latency percentiles.
type reqType int

const (
	reqDirectory  reqType = iota // GET directory
	reqNewNonce                  // HEAD newNonce
	reqNewAccount                // POST newAccount
	reqNewOrder                  // POST newOrder
	reqAuthz                     // the first POST-as-GET of an authorization
	reqChallenge                 // POST {} to the challenge
	reqPoll                      // later POST-as-GETs of the authorization, until valid
	reqFinalize                  // POST finalize with the CSR
	reqOrder                     // POST-as-GET of the order while it is processing
	reqCert                      // POST-as-GET of the certificate
	numReqTypes
)

var reqTypeNames = [numReqTypes]string{"directory", "newNonce", "newAccount", "newOrder", "authz", "challenge", "poll", "finalize", "order", "cert"}

func (t reqType) String() string { return reqTypeNames[t] }

const (
	problemPrefix = "urn:ietf:params:acme:error:"
	maxBody       = 1 << 20
)

// httpClient is one worker's HTTP client: its own transport, so its
// keep-alive connection is its own, trusting only the server's root.
// HTTP/1.1, as most ACME clients speak.
func httpClient(s *server) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: s.roots},
			MaxIdleConns:        4,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
		// No redirects in ACME; a 3xx is reported as it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// response is what the bench keeps of an HTTP response.
type response struct {
	status   int
	location string
	body     []byte
}

// requestError is a request that got an answer other than the one the
// flow needs. problem holds the server's problem document as it came.
type requestError struct {
	typ     reqType
	url     string
	status  int
	problem string // compacted problem document, or the start of the body
	probTyp string // the problem type, without the ACME prefix
}

func (e *requestError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.typ, e.url, e.status, e.problem)
}

func newRequestError(typ reqType, url string, r *response) *requestError {
	e := &requestError{typ: typ, url: url, status: r.status}
	var compact bytes.Buffer
	if json.Compact(&compact, r.body) == nil {
		e.problem = compact.String()
		var p struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(r.body, &p) == nil {
			e.probTyp = strings.TrimPrefix(p.Type, problemPrefix)
		}
	} else {
		e.problem = fmt.Sprintf("%.200q", r.body)
	}
	return e
}

// do sends one request, reads the whole answer, keeps its Replay-Nonce and
// records the time it took.
func (w *worker) do(ctx context.Context, typ reqType, method, url string, body []byte) (*response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/jose+json")
	}
	start := time.Now()
	resp, err := w.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", typ, err)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	end := time.Now()
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the body: %w", typ, url, err)
	}
	w.record(typ, end.Sub(start), end)
	if n := resp.Header.Get("Replay-Nonce"); n != "" {
		w.nonce = n
	}
	return &response{status: resp.StatusCode, location: resp.Header.Get("Location"), body: b}, nil
}

// newNonce fetches a fresh nonce with HEAD.
func (w *worker) newNonce(ctx context.Context) error {
	url := w.srv.dir0.NewNonce
	r, err := w.do(ctx, reqNewNonce, http.MethodHead, url, nil)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK || w.nonce == "" {
		return fmt.Errorf("%s %s: HTTP %d, nonce %q", reqNewNonce, url, r.status, w.nonce)
	}
	return nil
}

// post sends a JWS with the nonce of the last response, or a fresh one if
// there is none. A badNonce answer is retried with the nonce it carries,
// as every ACME client does, and counted. A nil payload is a POST-as-GET;
// an empty kid puts the account's JWK in the header.
func (w *worker) post(ctx context.Context, typ reqType, url string, key *accountKey, kid string, payload []byte, want int) (*response, error) {
	for attempt := 0; ; attempt++ {
		if w.nonce == "" {
			if err := w.newNonce(ctx); err != nil {
				return nil, err
			}
		}
		body, err := key.sign(url, w.nonce, kid, payload)
		if err != nil {
			return nil, err
		}
		w.nonce = ""
		r, err := w.do(ctx, typ, http.MethodPost, url, body)
		if err != nil {
			return nil, err
		}
		if r.status == want {
			return r, nil
		}
		e := newRequestError(typ, url, r)
		if e.probTyp == "badNonce" && attempt < 3 {
			w.badNonce++
			continue
		}
		return nil, e
	}
}

// get sends a GET and wants 200.
func (w *worker) get(ctx context.Context, typ reqType, url string) (*response, error) {
	r, err := w.do(ctx, typ, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, newRequestError(typ, url, r)
	}
	return r, nil
}

func decode(typ reqType, r *response, v any) error {
	if err := json.Unmarshal(r.body, v); err != nil {
		return fmt.Errorf("%s: decoding %.200q: %v", typ, r.body, err)
	}
	return nil
}
