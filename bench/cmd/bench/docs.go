package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The markers in docs/performance.md between which writeDocs puts the figures.
const (
	docsBegin = "<!-- bench-docs: begin -->"
	docsEnd   = "<!-- bench-docs: end -->"
)

// writeDocs puts the report in reportPath (a bench's latest.json) between the markers of
// the markdown file doc, replacing what was there: the figures in the docs are the bench's
// own, labelled with its commit and machine, never copied by hand (make bench-docs).
func writeDocs(reportPath, doc string) error {
	b, err := os.ReadFile(reportPath)
	if err != nil {
		return fmt.Errorf("%w (make bench writes it)", err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", reportPath, err)
	}
	page, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	begin, end := bytes.Index(page, []byte(docsBegin)), bytes.Index(page, []byte(docsEnd))
	if begin < 0 || end < begin {
		return fmt.Errorf("%s has no %s … %s to write between", doc, docsBegin, docsEnd)
	}
	var figures bytes.Buffer
	r.markdown(&figures)
	var out bytes.Buffer
	out.Write(page[:begin+len(docsBegin)])
	out.WriteString("\n")
	out.WriteString(strings.Replace(strings.TrimSpace(figures.String()), "## orderflow bench", "### orderflow bench", 1))
	out.WriteString("\n")
	// The curve, beside the page, drawn from the same report.
	var curve bytes.Buffer
	if r.svg(&curve) {
		name := strings.TrimSuffix(filepath.Base(doc), ".md") + ".svg"
		if err := os.WriteFile(filepath.Join(filepath.Dir(doc), name), curve.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&out, "\nConfirmed orders/s and POST→CONFIRMED p50 and p99 against the load offered, per broker, from the same runs:\n\n![confirmed orders/s and latency against offered load](%s)\n", name)
	}
	out.Write(page[end:])
	return os.WriteFile(doc, out.Bytes(), 0o644)
}

// commit names the tree the bench runs: the commit, and "-dirty" when files differ from it.
func commit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=10").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
