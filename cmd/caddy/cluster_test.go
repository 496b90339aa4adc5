package main

// Rate limits across a cluster: two Caddy processes sharing one storage
// directory enforce one set of counts. Caddy is a process-wide singleton,
// so the second node has to be a second process.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
)

// clClient is a minimal ACME client for the cluster test: it keeps each
// response's status and headers, and its requests can be signed ahead and
// sent from goroutines.
type clClient struct {
	t    testing.TB
	ca   *testCA
	http *http.Client
	dir  struct {
		NewNonce   string `json:"newNonce"`
		NewAccount string `json:"newAccount"`
		NewOrder   string `json:"newOrder"`
	}
}

type clResp struct {
	status int
	header http.Header
	body   []byte
}

type clAccount struct {
	key *ecdsa.PrivateKey
	kid string
}

type clOrder struct {
	url            string
	Status         string   `json:"status"`
	Authorizations []string `json:"authorizations"`
	Finalize       string   `json:"finalize"`
	Certificate    string   `json:"certificate"`
}

func newCLClient(t testing.TB, ca *testCA) *clClient {
	t.Helper()
	c := &clClient{t: t, ca: ca, http: &http.Client{
		Timeout:   3 * time.Minute,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Roots}, MaxIdleConnsPerHost: 64},
	}}
	resp, err := c.http.Get(ca.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&c.dir); err != nil {
		t.Fatalf("directory: %v", err)
	}
	return c
}

func (c *clClient) sign(key *ecdsa.PrivateKey, kid, url string, payload any) ([]byte, error) {
	body := []byte{}
	if payload != nil {
		var err error
		if body, err = json.Marshal(payload); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequest(http.MethodHead, c.dir.NewNonce, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"nonce": resp.Header.Get("Replay-Nonce"), "url": url}}
	if kid != "" {
		opts.ExtraHeaders["kid"] = kid
	} else {
		opts.EmbedJWK = true
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		return nil, err
	}
	jws, err := signer.Sign(body)
	if err != nil {
		return nil, err
	}
	return []byte(jws.FullSerialize()), nil
}

func (c *clClient) send(url string, jws []byte) (*clResp, error) {
	resp, err := c.http.Post(url, "application/jose+json", bytes.NewReader(jws))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &clResp{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

func (c *clClient) post(key *ecdsa.PrivateKey, kid, url string, payload any, want int) *clResp {
	c.t.Helper()
	jws, err := c.sign(key, kid, url, payload)
	if err != nil {
		c.t.Fatal(err)
	}
	r, err := c.send(url, jws)
	if err != nil {
		c.t.Fatalf("POST %s: %v", url, err)
	}
	if want != 0 && r.status != want {
		c.t.Fatalf("POST %s: %d %s; want %d", url, r.status, r.body, want)
	}
	return r
}

func (c *clClient) account() *clAccount {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	r := c.post(key, "", c.dir.NewAccount, map[string]any{"termsOfServiceAgreed": true}, http.StatusCreated)
	return &clAccount{key: key, kid: r.header.Get("Location")}
}

func (c *clClient) order(a *clAccount, url string) *clOrder {
	c.t.Helper()
	r := c.post(a.key, a.kid, url, nil, http.StatusOK)
	o := &clOrder{url: url}
	if err := json.Unmarshal(r.body, o); err != nil {
		c.t.Fatal(err)
	}
	return o
}

func (c *clClient) newOrder(a *clAccount, name string) *clOrder {
	c.t.Helper()
	r := c.post(a.key, a.kid, c.dir.NewOrder, map[string]any{
		"identifiers": []map[string]string{{"type": "dns", "value": name}},
	}, http.StatusCreated)
	o := &clOrder{url: r.header.Get("Location")}
	if err := json.Unmarshal(r.body, o); err != nil {
		c.t.Fatal(err)
	}
	return o
}

type clAuthz struct {
	Status     string `json:"status"`
	Challenges []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Token string `json:"token"`
	} `json:"challenges"`
}

func (c *clClient) authz(a *clAccount, url string) clAuthz {
	c.t.Helper()
	var az clAuthz
	if err := json.Unmarshal(c.post(a.key, a.kid, url, nil, http.StatusOK).body, &az); err != nil {
		c.t.Fatal(err)
	}
	return az
}

// answer publishes the http-01 key authorization and asks for validation.
func (c *clClient) answer(a *clAccount, authzURL string, r *clResponder) {
	c.t.Helper()
	for _, ch := range c.authz(a, authzURL).Challenges {
		if ch.Type == "http-01" {
			tp, err := (&jose.JSONWebKey{Key: &a.key.PublicKey}).Thumbprint(crypto.SHA256)
			if err != nil {
				c.t.Fatal(err)
			}
			r.set(ch.Token, ch.Token+"."+base64.RawURLEncoding.EncodeToString(tp))
			c.post(a.key, a.kid, ch.URL, map[string]any{}, http.StatusOK)
			return
		}
	}
	c.t.Fatal("no http-01 challenge offered")
}

func (c *clClient) waitAuthzValid(a *clAccount, url string) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		switch st := c.authz(a, url).Status; {
		case st == "valid":
			return
		case st != "pending" || time.Now().After(deadline):
			c.t.Fatalf("authz %s is %s, want valid", url, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func clCSR(t testing.TB, name string) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(der)
}

// clResponder answers http-01 for every node: all of them connect to the
// same validation port.
type clResponder struct {
	mu   sync.Mutex
	keys map[string]string
}

func clServeHTTP01(t *testing.T, port int) *clResponder {
	t.Helper()
	r := &clResponder{keys: map[string]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		ka, ok := r.keys[strings.TrimPrefix(req.URL.Path, "/.well-known/acme-challenge/")]
		r.mu.Unlock()
		if !ok {
			http.NotFound(w, req)
			return
		}
		io.WriteString(w, ka)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *clResponder) set(token, keyAuth string) {
	r.mu.Lock()
	r.keys[token] = keyAuth
	r.mu.Unlock()
}

// clJob is one ready order, to be finalized on one node.
type clJob struct {
	node   int
	client *clClient
	acct   *clAccount
	order  *clOrder
	name   string
	jws    []byte // the finalize request, signed ahead
}

// clReadyOrders makes perNode ready orders on each node, one name each
// under domain.
func clReadyOrders(t *testing.T, clients []*clClient, responder *clResponder, perNode int, domain string) []*clJob {
	t.Helper()
	var jobs []*clJob
	for n, c := range clients {
		for i := range perNode {
			j := &clJob{node: n, client: c, name: fmt.Sprintf("n%d-%02d.%s", n, i, domain)}
			j.acct = c.account()
			j.order = c.newOrder(j.acct, j.name)
			c.answer(j.acct, j.order.Authorizations[0], responder)
			jobs = append(jobs, j)
		}
	}
	for _, j := range jobs {
		j.client.waitAuthzValid(j.acct, j.order.Authorizations[0])
	}
	return jobs
}

// clSign signs every job's finalize request with a nonce of its node.
func clSign(t *testing.T, jobs []*clJob) {
	t.Helper()
	for _, j := range jobs {
		jws, err := j.client.sign(j.acct.key, j.acct.kid, j.order.Finalize, map[string]string{"csr": clCSR(t, j.name)})
		if err != nil {
			t.Fatal(err)
		}
		j.jws = jws
	}
}

// moveTo makes a job finalize on another node: the same account and order
// in the shared storage, at that node's URLs.
func (j *clJob) moveTo(node int, c *clClient) {
	from := strings.TrimSuffix(j.client.ca.DirectoryURL, "/directory")
	to := strings.TrimSuffix(c.ca.DirectoryURL, "/directory")
	acct := *j.acct
	acct.kid = strings.Replace(acct.kid, from, to, 1)
	order := *j.order
	order.url = strings.Replace(order.url, from, to, 1)
	order.Finalize = strings.Replace(order.Finalize, from, to, 1)
	j.node, j.client, j.acct, j.order = node, c, &acct, &order
}

// clBurst sends every finalize at once and checks the outcome: exactly
// limit certificates, every other order refused with rateLimited and left
// ready.
func clBurst(t *testing.T, jobs []*clJob, nodes, limit int) {
	t.Helper()
	results := make([]*clResp, len(jobs))
	errs := make([]error, len(jobs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = j.client.send(j.order.Finalize, j.jws)
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)

	issued, refused := 0, 0
	issuedBy := make([]int, nodes)
	for i, r := range results {
		j := jobs[i]
		if errs[i] != nil {
			t.Errorf("finalize %s on node %d: %v", j.name, j.node, errs[i])
			continue
		}
		switch r.status {
		case http.StatusOK:
			issued++
			issuedBy[j.node]++
			o := j.client.order(j.acct, j.order.url)
			if o.Status != "valid" {
				t.Errorf("issued order %s is %s", j.name, o.Status)
				continue
			}
			chain := j.client.post(j.acct.key, j.acct.kid, o.Certificate, nil, http.StatusOK).body
			certs, err := parseCerts(chain)
			if err != nil || len(certs) == 0 || certs[0].VerifyHostname(j.name) != nil {
				t.Errorf("certificate for %s: %v", j.name, err)
			}
		case http.StatusTooManyRequests:
			refused++
			var p struct{ Type, Detail string }
			if err := json.Unmarshal(r.body, &p); err != nil || p.Type != "urn:ietf:params:acme:error:rateLimited" ||
				!strings.Contains(p.Detail, "certificates_per_registered_domain") {
				t.Errorf("refusal for %s: %s", j.name, r.body)
			}
			if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s <= 0 {
				t.Errorf("refusal for %s: Retry-After %q", j.name, r.header.Get("Retry-After"))
			}
			if st := j.client.order(j.acct, j.order.url).Status; st != "ready" {
				t.Errorf("refused order %s is %s, want ready", j.name, st)
			}
		default:
			t.Errorf("finalize %s on node %d: %d %s", j.name, j.node, r.status, r.body)
		}
	}
	t.Logf("%d finalizes at once on %d nodes took %v: %d certificates issued (by node: %v), %d refused",
		len(jobs), nodes, took.Round(time.Millisecond), issued, issuedBy, refused)
	if issued != limit || refused != len(jobs)-limit {
		t.Fatalf("%d certificates issued and %d refused across the cluster; want exactly %d and %d",
			issued, refused, limit, len(jobs)-limit)
	}
}

// TestClusterRateLimitExact: two nodes on one storage, 40 ready orders
// for 40 names under one registered domain, 20 finalized on each node at
// once, a limit of 20 certificates: exactly 20 certificates in total. It
// bursts twice: just after the second node started (the first has not
// seen its heartbeat yet and spends without storage locks; the newcomer
// waits out its grace), and once both know each other and take the
// buckets' storage locks.
func TestClusterRateLimitExact(t *testing.T) {
	const perNode, limit = 20, 20
	storage := filepath.Join(t.TempDir(), "storage")
	dns := testdns.Start(t)
	dns.SetDefaultA("127.0.0.1")
	validationPort := freePorts(t, 1)[0]
	limits := fmt.Sprintf("rate_limits {\n\t\t\tcertificates_per_registered_domain %d 1h\n\t\t\tdisable new_requests directory_requests\n\t\t}", limit)
	responder := clServeHTTP01(t, validationPort)

	// The first node creates the CA's keys in the shared storage and, while
	// alone, the orders of the first burst.
	node := []caOption{withCaddyfile("ratelimit.Caddyfile.tmpl"), withRateLimits(limits), inCluster(storage, dns, validationPort)}
	nodes := []*testCA{startCA(t, node...)}
	clients := []*clClient{newCLClient(t, nodes[0])}
	joining := clReadyOrders(t, clients, responder, 2*perNode, "one-cluster.test")

	// The second node joins, as a node joining a cluster does.
	nodes = append(nodes, startCA(t, node...))
	joined := time.Now()
	if !nodes[0].Root.Equal(nodes[1].Root) {
		t.Fatal("the two nodes serve different roots; they do not share the storage")
	}
	clients = append(clients, newCLClient(t, nodes[1]))

	t.Run("Joining", func(t *testing.T) {
		for _, j := range joining[perNode:] {
			j.moveTo(1, clients[1])
		}
		clSign(t, joining)
		t.Logf("burst %v after the second node started", time.Since(joined).Round(time.Millisecond))
		clBurst(t, joining, len(nodes), limit)
	})
	t.Run("Steady", func(t *testing.T) {
		jobs := clReadyOrders(t, clients, responder, perNode, "two-cluster.test")
		// By now each node has seen the other's heartbeat (every 10s) and
		// the newcomer's grace (15s) is over.
		if wait := time.Until(joined.Add(20 * time.Second)); wait > 0 {
			time.Sleep(wait)
		}
		clSign(t, jobs)
		clBurst(t, jobs, len(nodes), limit)
	})
}
