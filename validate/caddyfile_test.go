package validate

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		module  func() caddyfile.Unmarshaler
		want    any
		wantErr string
	}{
		{name: "http-01 bare", input: "http-01", module: func() caddyfile.Unmarshaler { return new(HTTP01) }, want: HTTP01{}},
		{name: "http-01 block", input: "http-01 {\n port 8080\n timeout 3s\n}", module: func() caddyfile.Unmarshaler { return new(HTTP01) },
			want: HTTP01{Port: 8080, Timeout: caddy.Duration(3 * time.Second)}},
		{name: "http-01 bad port", input: "http-01 {\n port 70000\n}", module: func() caddyfile.Unmarshaler { return new(HTTP01) }, wantErr: "not a TCP port"},
		{name: "http-01 port without value", input: "http-01 {\n port\n}", module: func() caddyfile.Unmarshaler { return new(HTTP01) }, wantErr: "wrong argument count"},
		{name: "http-01 extra argument", input: "http-01 {\n port 80 81\n}", module: func() caddyfile.Unmarshaler { return new(HTTP01) }, wantErr: "wrong argument count"},
		{name: "http-01 inline argument", input: "http-01 8080", module: func() caddyfile.Unmarshaler { return new(HTTP01) }, wantErr: "wrong argument count"},
		{name: "http-01 unknown option", input: "http-01 {\n retries 3\n}", module: func() caddyfile.Unmarshaler { return new(HTTP01) }, wantErr: `unrecognized http-01 option "retries"`},
		{name: "http-01 bad timeout", input: "http-01 {\n timeout soon\n}", module: func() caddyfile.Unmarshaler { return new(HTTP01) }, wantErr: "timeout"},
		{name: "dns-01 block", input: "dns-01 {\n timeout 1m\n}", module: func() caddyfile.Unmarshaler { return new(DNS01) },
			want: DNS01{Timeout: caddy.Duration(time.Minute)}},
		{name: "dns-01 has no port", input: "dns-01 {\n port 53\n}", module: func() caddyfile.Unmarshaler { return new(DNS01) }, wantErr: "no port"},
		{name: "tls-alpn-01 block", input: "tls-alpn-01 {\n port 8443\n}", module: func() caddyfile.Unmarshaler { return new(TLSALPN01) },
			want: TLSALPN01{Port: 8443}},
		{name: "wrong type token", input: "http-01", module: func() caddyfile.Unmarshaler { return new(TLSALPN01) }, wantErr: `expected "tls-alpn-01"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.module()
			err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got any
			switch v := m.(type) {
			case *HTTP01:
				got = *v
			case *DNS01:
				got = *v
			case *TLSALPN01:
				got = *v
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// A parent block hands the dispenser over already sitting on the
// challenge-type token; the block must parse the same and stop at its end.
func TestUnmarshalCaddyfileFromParent(t *testing.T) {
	d := caddyfile.NewTestDispenser("challenges {\n http-01 {\n port 8080\n }\n dns-01\n}")
	d.Next() // "challenges"
	var h HTTP01
	var dn DNS01
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "http-01":
			err = h.UnmarshalCaddyfile(d)
		case "dns-01":
			err = dn.UnmarshalCaddyfile(d)
		default:
			t.Fatalf("unexpected token %q", d.Val())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if h.Port != 8080 {
		t.Errorf("port = %d, want 8080", h.Port)
	}
}

func TestModules(t *testing.T) {
	for _, id := range []string{"acme_ca.challenges.http-01", "acme_ca.challenges.dns-01", "acme_ca.challenges.tls-alpn-01"} {
		info, err := caddy.GetModule(id)
		if err != nil {
			t.Errorf("module %s not registered: %v", id, err)
			continue
		}
		if _, ok := info.New().(Validator); !ok {
			t.Errorf("module %s is not a Validator", id)
		}
		if _, ok := info.New().(caddyfile.Unmarshaler); !ok {
			t.Errorf("module %s is not a caddyfile.Unmarshaler", id)
		}
	}
}

func TestProvisionDefaults(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()

	h := &HTTP01{}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if h.Port != 80 || time.Duration(h.Timeout) != 10*time.Second {
		t.Errorf("http-01 defaults: port %d timeout %s", h.Port, time.Duration(h.Timeout))
	}
	ta := &TLSALPN01{}
	if err := ta.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if ta.Port != 443 || time.Duration(ta.Timeout) != 10*time.Second {
		t.Errorf("tls-alpn-01 defaults: port %d timeout %s", ta.Port, time.Duration(ta.Timeout))
	}
	dn := &DNS01{}
	if err := dn.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if time.Duration(dn.Timeout) != 10*time.Second {
		t.Errorf("dns-01 default timeout %s", time.Duration(dn.Timeout))
	}
	if err := (&HTTP01{Port: -1}).Provision(ctx); err == nil || !strings.Contains(err.Error(), "port") {
		t.Errorf("negative port: err = %v", err)
	}
	if err := (&TLSALPN01{Timeout: -1}).Provision(ctx); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("negative timeout: err = %v", err)
	}
}
