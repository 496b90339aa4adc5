package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const challengePath = "/.well-known/acme-challenge/"

// http01Server answers http-01 validation requests on 127.0.0.1:80 for
// every flow of the bench, from a map of token → key authorization. It
// serves both ordinary requests (our CA connects to the name's address)
// and proxy requests in absolute form (Caddy's acme_server, see serverEnv).
type http01Server struct {
	ln      net.Listener
	srv     *http.Server
	keyAuth sync.Map // token → key authorization
	served  atomic.Int64
	unknown atomic.Int64 // requests for tokens the bench did not publish
}

// errPort80 explains what to do when port 80 cannot be bound.
var errPort80 = errors.New("acmeca-bench answers http-01 on 127.0.0.1:80, where both CAs validate, " +
	"so it must run as root (or with CAP_NET_BIND_SERVICE) while nothing else listens on port 80")

func startHTTP01() (*http01Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPort80, err)
	}
	h := &http01Server{ln: ln}
	h.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

func (h *http01Server) close() { _ = h.srv.Close() }

func (h *http01Server) publish(token, keyAuth string) { h.keyAuth.Store(token, keyAuth) }
func (h *http01Server) withdraw(token string)         { h.keyAuth.Delete(token) }

func (h *http01Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, challengePath)
	if !ok || r.Method != http.MethodGet {
		h.unknown.Add(1)
		http.NotFound(w, r)
		return
	}
	v, ok := h.keyAuth.Load(token)
	if !ok {
		h.unknown.Add(1)
		http.NotFound(w, r)
		return
	}
	h.served.Add(1)
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, v.(string))
}

// Interface guard
var _ http.Handler = (*http01Server)(nil)
