package main

import (
	"bytes"
	"text/template"
)

// caddyfileParams fills caddyfileTmpl.
type caddyfileParams struct {
	Admin     string // "off", or a loopback address for -server-pprof
	Storage   string
	HTTPPort  int
	HTTPSPort int
	DNS       string // host:port of the bench's DNS server
	Ours      bool   // acme_ca; otherwise Caddy's acme_server
	Challenge string // the challenge type the bench answers
}

// caddyfileTmpl is the configuration of both servers. They differ only in
// the handler: everything around it (TLS, HTTP versions, logging, storage)
// is the same, so the comparison is of the two ACME implementations.
//
// Our CA keeps its counting rate limits; the per-IP request limits are
// raised for 127.0.0.1 because every request of the bench comes from there,
// and every flow orders names under a registered domain of its own, so the
// per-domain limits never bite either.
var caddyfileTmpl = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	skip_install_trust
	storage file_system {{.Storage}}
	persist_config off
	default_bind 127.0.0.1
	http_port {{.HTTPPort}}
	https_port {{.HTTPSPort}}
	auto_https disable_redirects
	log {
		level ERROR
	}
	servers {
		protocols h1 h2
	}
}

https://localhost:{{.HTTPSPort}} {
	tls internal
{{- if .Ours}}
	acme_ca {
		resolvers {{.DNS}}
		challenges {
{{- if eq .Challenge "dns-01"}}
			dns-01
{{- else}}
			http-01 {
				port 80
			}
{{- end}}
		}
		rate_limits {
			override new_requests 127.0.0.1 100000000 1s
			override directory_requests 127.0.0.1 100000000 1s
		}
	}
{{- else}}
	acme_server {
		resolvers {{.DNS}}
		challenges {{.Challenge}}
	}
{{- end}}
}
`))

func renderCaddyfile(p caddyfileParams) ([]byte, error) {
	var b bytes.Buffer
	err := caddyfileTmpl.Execute(&b, p)
	return b.Bytes(), err
}
