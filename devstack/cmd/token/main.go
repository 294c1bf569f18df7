// Command token mints a bearer token that the local stack (make run) accepts, signed with
// its development issuer's key from .data/issuer, and prints it.
//
//	go run ./devstack/cmd/token -sub 5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93 -scope orderflow:customer
//	go run ./devstack/cmd/token -sub alice -scope orderflow:operator -ttl 8h
//
// ORDERFLOW_DATA_DIR points it at another stack's data, as it does devstack.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/stack"
)

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "token: %v\n", err)
		os.Exit(2)
	}
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "the subject: a customer's UUID, or an operator's name (required)")
	scope := fs.String("scope", "", `scopes, space- or comma-separated: "orderflow:customer", "orderflow:operator" (required)`)
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	scopes := strings.FieldsFunc(*scope, func(r rune) bool { return r == ',' || r == ' ' })
	switch {
	case *sub == "":
		return fmt.Errorf("-sub is required (SUB=… with make token)")
	case len(scopes) == 0:
		return fmt.Errorf("-scope is required (SCOPE=… with make token): orderflow:customer or orderflow:operator")
	case *ttl <= 0:
		return fmt.Errorf("-ttl must be positive, got %s", *ttl)
	}
	dir := getenv("ORDERFLOW_DATA_DIR")
	if dir == "" {
		root, err := stack.FindRoot()
		if err != nil {
			return err
		}
		dir = filepath.Join(root, ".data")
	}
	is, err := issuer.Load(filepath.Join(dir, "issuer"))
	if err != nil {
		return err
	}
	tok, err := is.Mint(*sub, scopes, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
