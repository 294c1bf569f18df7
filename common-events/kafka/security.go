package kafka

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
)

// Security protocols, as librdkafka's and the Java client's security.protocol names them.
const (
	Plaintext     = "PLAINTEXT"
	SSL           = "SSL"
	SASLPlaintext = "SASL_PLAINTEXT"
	SASLSSL       = "SASL_SSL"
)

// SASL mechanisms, as sasl.mechanism names them.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// Security is how a client reaches a cluster that wants TLS, SASL or both, which every
// managed one does (Confluent Cloud: SASL_SSL and PLAIN; Amazon MSK: TLS with SCRAM; Aiven:
// TLS or SCRAM). The zero value is PLAINTEXT.
type Security struct {
	Protocol           string // Plaintext (""), SSL, SASLPlaintext or SASLSSL
	Mechanism          string // with SASL: MechanismPlain, MechanismSCRAMSHA256 or MechanismSCRAMSHA512
	Username, Password string // with SASL
	// TLS, with SSL and SASL_SSL: the CAs to trust (nil RootCAs: the system's) and the
	// client's own certificate, if the cluster asks for one. Nil: the defaults.
	TLS *tls.Config
}

// TLSEnabled and SASLEnabled say what the protocol takes.
func (s Security) TLSEnabled() bool  { return s.Protocol == SSL || s.Protocol == SASLSSL }
func (s Security) SASLEnabled() bool { return s.Protocol == SASLPlaintext || s.Protocol == SASLSSL }

// Config is Config(clientID) reaching the cluster as s says: every client a service
// makes — producer, consumers, admin, the lag reader, the readiness ping — is made from it.
func (s Security) Config(clientID string) *sarama.Config {
	c := Config(clientID)
	s.Apply(c)
	return c
}

// Apply makes c reach the cluster as s says, changing nothing else.
func (s Security) Apply(c *sarama.Config) {
	if s.TLSEnabled() {
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = &tls.Config{MinVersion: tls.VersionTLS12}
		if s.TLS != nil {
			c.Net.TLS.Config = s.TLS.Clone()
		}
	}
	if s.SASLEnabled() {
		c.Net.SASL.Enable, c.Net.SASL.Handshake = true, true
		c.Net.SASL.User, c.Net.SASL.Password = s.Username, s.Password
		switch s.Mechanism {
		case MechanismSCRAMSHA256:
			c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.HashGeneratorFcn(sha256.New)} }
		case MechanismSCRAMSHA512:
			c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.HashGeneratorFcn(sha512.New)} }
		default:
			c.Net.SASL.Mechanism = sarama.SASLTypePlaintext
		}
	}
}

// TLSConfig reads the PEM files of a TLS client: caFile, the CAs to trust in place of the
// system's (empty: the system's); certFile and keyFile, the client's certificate, both
// or neither.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and its key")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// scramClient is sarama's SCRAMClient over xdg-go/scram, as sarama's own example has it.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	client, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	c.conv = client.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }
func (c *scramClient) Done() bool                            { return c.conv.Done() }
