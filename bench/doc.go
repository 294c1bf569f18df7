// Package bench measures orderflow: a load generator with an end-to-end report
// (cmd/bench, `make bench`) and a side-by-side comparison of the outbox relay with
// Watermill's SQL forwarder (peer). It is its own module so that the services never
// depend on what it compares them with.
package bench
