// Package caddyacmeca is the import path xcaddy builds in:
//
//	xcaddy build --with github.com/acmeca/caddy-acmeca
//
// Importing it registers the acme_ca handler and the challenge validators.
package caddyacmeca

import (
	_ "github.com/acmeca/caddy-acmeca/caddymodule"
	_ "github.com/acmeca/caddy-acmeca/validate"
)
