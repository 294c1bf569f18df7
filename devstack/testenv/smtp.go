package testenv

import (
	"bytes"
	"io"
	"net"
	"net/mail"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// Email is one message a MailServer received.
type Email struct {
	From, To  string
	Subject   string
	MessageID string
	Body      string
}

// MailServer is a real SMTP server on loopback that keeps what it receives.
type MailServer struct {
	Addr string
	mu   sync.Mutex
	msgs []Email
}

// SMTP starts a mail server for this test, stopped when the test ends.
func SMTP(t testing.TB) *MailServer {
	t.Helper()
	ms := &MailServer{}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{ms: ms}, nil }))
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	s.ErrorLog = discardLog{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms.Addr = ln.Addr().String()
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ms
}

// Emails returns what arrived so far.
func (m *MailServer) Emails() []Email {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Email(nil), m.msgs...)
}

// To returns what arrived for one recipient.
func (m *MailServer) To(rcpt string) []Email {
	var out []Email
	for _, e := range m.Emails() {
		if e.To == rcpt {
			out = append(out, e)
		}
	}
	return out
}

type session struct {
	ms       *MailServer
	from, to string
}

func (s *session) Reset()        {}
func (s *session) Logout() error { return nil }
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = to
	return nil
}
func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(msg.Body)
	s.ms.mu.Lock()
	defer s.ms.mu.Unlock()
	s.ms.msgs = append(s.ms.msgs, Email{
		From: s.from, To: s.to, Subject: msg.Header.Get("Subject"), MessageID: msg.Header.Get("Message-ID"), Body: string(body),
	})
	return nil
}

type discardLog struct{}

func (discardLog) Printf(string, ...any) {}
func (discardLog) Println(...any)        {}
