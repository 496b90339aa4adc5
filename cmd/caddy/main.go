// Command caddy is Caddy with the standard modules plus the acme_ca handler.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/acmeca/caddy-acmeca/caddymodule"
)

func main() {
	caddycmd.Main()
}
