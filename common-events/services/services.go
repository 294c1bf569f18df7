// Package services says who is who: each orderflow service's name, consumer group, the
// topics that group reads, its default HTTP port and its database, declared once here.
// Its app, devstack, compose's checks and the docs derive from it.
//
// It depends on the event contract only, so a tool can know the services without
// pulling in what they run on.
package services

import (
	"fmt"
	"slices"
	"time"

	"github.com/orderflow/common-events/events"
)

// Service is one service's identity.
type Service struct {
	// Name is the service in logs, metrics, ce_source, its Kafka principal and client id,
	// and its database role.
	Name string
	// Group is its consumer group, which reads Consumes; each topic has one handler, and
	// a poison record of each goes to the group's dead-letter topic for it.
	Group    string
	Consumes []string
	// Port is its HTTP port on a local stack and its default; PortVar is devstack's
	// setting for it. ComposePort is the host port docker compose publishes it on.
	Port        int
	PortVar     string
	ComposePort int
	// Database is its own database, which its role alone owns.
	Database string
	// Linger is its consumer group's default CONSUMER_LINGER (consumer.Runner.Linger):
	// none for the groups on the way from POST to CONFIRMED; the others' records may
	// wait a little to commit together.
	Linger time.Duration
	// EmitsOffTheWay says no event its group's handlers store is on the way from POST to
	// CONFIRMED, nor awaited by a customer: they may wait up to outbox.Soon to share the
	// relay's next round (consumer.Runner.WakeSoon). The others' (payment-service's
	// payment.completed) go at once.
	EmitsOffTheWay bool
}

// The services, in start order.
var (
	Order = Service{
		Name: events.SourceOrderService, Group: "order-service",
		Consumes: []string{events.TopicPaymentCompleted, events.TopicPaymentFailed},
		Port:     8080, PortVar: "ORDER_PORT", ComposePort: 8080, Database: "orders",
		EmitsOffTheWay: true, // an order's new state, for the read models
	}
	Payment = Service{
		Name: events.SourcePaymentService, Group: "payment-service",
		Consumes: []string{events.TopicOrderCreated, events.TopicOrderCancelled},
		Port:     8081, PortVar: "PAYMENT_PORT", ComposePort: 8081, Database: "payments",
	}
	Notification = Service{
		Name: events.SourceNotificationService, Group: "notification-service",
		Consumes: []string{events.TopicPaymentCompleted, events.TopicPaymentFailed, events.TopicOrderCancelled, events.TopicPaymentRefunded},
		// Under compose, 8082 and 8083 go to payment-service's replicas when it is scaled.
		Port: 8082, PortVar: "NOTIFICATION_PORT", ComposePort: 8084, Database: "notifications",
		Linger: 50 * time.Millisecond, EmitsOffTheWay: true,
	}
	Reconciliation = Service{
		Name: "reconciliation-service", Group: "reconciliation-service",
		Consumes: []string{events.TopicOrderState, events.TopicPaymentCompleted, events.TopicPaymentFailed,
			events.TopicPaymentRefunded, events.TopicNotificationSent},
		Port: 8083, PortVar: "RECONCILIATION_PORT", ComposePort: 8085, Database: "reconciliation",
		Linger: 100 * time.Millisecond, EmitsOffTheWay: true,
	}
)

// All lists the services in start order.
func All() []Service { return []Service{Order, Payment, Notification, Reconciliation} }

// Names lists the services' names in start order.
func Names() []string { return each(func(s Service) string { return s.Name }) }

// Databases lists the services' databases in start order.
func Databases() []string { return each(func(s Service) string { return s.Database }) }

func each[T any](f func(Service) T) []T {
	all := All()
	out := make([]T, len(all))
	for i, s := range all {
		out[i] = f(s)
	}
	return out
}

// Named returns the service called name.
func Named(name string) (Service, bool) {
	all := All()
	i := slices.IndexFunc(all, func(s Service) bool { return s.Name == name })
	if i < 0 {
		return Service{}, false
	}
	return all[i], true
}

// Groups maps the service's consumer group to the topics it reads (none without a group).
func (s Service) Groups() map[string][]string {
	if s.Group == "" {
		return map[string][]string{}
	}
	return map[string][]string{s.Group: slices.Clone(s.Consumes)}
}

// DeadLetterTopics are the topics where its group parks the poison records it reads.
func (s Service) DeadLetterTopics() []string {
	out := make([]string, len(s.Consumes))
	for i, t := range s.Consumes {
		out[i] = events.DeadLetterTopic(t, s.Group)
	}
	return out
}

// Addr is the HTTP address it listens on by default.
func (s Service) Addr() string { return fmt.Sprintf(":%d", s.Port) }

// DatabaseURL is its database on the PostgreSQL at host:port, as user.
func (s Service) DatabaseURL(user, host string, port int) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", user, host, port, s.Database)
}

// DefaultDatabaseURL is its database on a local stack's PostgreSQL (devstack's port),
// as the superuser: what a service run by hand uses when DATABASE_URL is unset.
func (s Service) DefaultDatabaseURL() string { return s.DatabaseURL("postgres", "127.0.0.1", 55432) }

// CheckHandlers reports a difference between the topics the service's group reads and
// those handlers has a handler for: each read topic needs one, and a handler for a topic
// not read would never run.
func (s Service) CheckHandlers(topics []string) error {
	want, got := slices.Sorted(slices.Values(s.Consumes)), slices.Sorted(slices.Values(topics))
	if !slices.Equal(want, got) {
		return fmt.Errorf("%s: group %s reads %v but has handlers for %v", s.Name, s.Group, want, got)
	}
	return nil
}
