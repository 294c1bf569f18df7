// Package mail sends notification emails: over SMTP when a server is configured,
// otherwise into the log.
package mail

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"strings"
	"time"
)

// Message is one email.
type Message struct {
	From, To, Subject, Body string
	MessageID               string // stable per notification
	Date                    time.Time
}

// SMTP sends through an SMTP server without authentication (Mailpit, a local relay).
type SMTP struct {
	Addr string
	// Timeout bounds one whole send; default 10s.
	Timeout time.Duration
}

// Send delivers msg, or returns an error to retry later.
func (s SMTP) Send(ctx context.Context, msg Message) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	host, _, _ := net.SplitHostPort(s.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	defer c.Close()
	if err := send(c, msg); err != nil {
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	return c.Quit()
}

func send(c *smtp.Client, msg Message) error {
	if err := c.Hello("orderflow.local"); err != nil {
		return err
	}
	if err := c.Mail(address(msg.From)); err != nil {
		return err
	}
	if err := c.Rcpt(msg.To); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(Format(msg)); err != nil {
		return err
	}
	return w.Close()
}

func address(from string) string {
	if i := strings.IndexByte(from, '<'); i >= 0 {
		return strings.TrimSuffix(from[i+1:], ">")
	}
	return from
}

// Format renders msg as an RFC 5322 message.
func Format(msg Message) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\n", msg.From)
	fmt.Fprintf(&b, "To: %s\r\n", msg.To)
	fmt.Fprintf(&b, "Subject: %s\r\n", msg.Subject)
	fmt.Fprintf(&b, "Message-ID: %s\r\n", msg.MessageID)
	fmt.Fprintf(&b, "Date: %s\r\n", msg.Date.Format(time.RFC1123Z))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	b.WriteString(msg.Body)
	return []byte(b.String())
}

// Log "sends" by writing the email to the log, for a stack without a mail server.
type Log struct {
	Log *slog.Logger
}

// Send logs msg.
func (l Log) Send(_ context.Context, msg Message) error {
	l.Log.Info("email (log sender)", "to", msg.To, "subject", msg.Subject, "message_id", msg.MessageID, "body", msg.Body)
	return nil
}
