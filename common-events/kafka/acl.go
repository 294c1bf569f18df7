package kafka

import (
	"fmt"
	"maps"
	"slices"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/events"
)

// Permission is one thing a principal may do on the cluster: Operation on a resource (a
// topic, a consumer group, the cluster) named Name.
type Permission struct {
	Resource  sarama.AclResourceType
	Name      string
	Operation sarama.AclOperation
}

func (p Permission) String() string {
	return fmt.Sprintf("%s %s %s", p.Operation.String(), p.Resource.String(), p.Name)
}

// Permissions are what service may do, derived from what the code declares rather than
// written down a second time: it writes (idempotently) the topics of the events it is the
// source of (events.Kinds) and its groups' dead-letter topics; it reads the topics each of
// its groups consumes (groups: its services.Service.Groups()) and uses those groups, and no
// other. Describing what it may read or write is what its metadata, lag and readiness
// requests need. Nothing else: no topic is created, none read or written beyond these.
func Permissions(service string, groups map[string][]string) []Permission {
	var ps permissions
	for _, k := range events.Kinds() {
		if k.Source == service {
			ps.add(sarama.AclResourceTopic, k.Topic, sarama.AclOperationWrite, sarama.AclOperationDescribe)
		}
	}
	for _, group := range sortedKeys(groups) {
		ps.add(sarama.AclResourceGroup, group, sarama.AclOperationRead, sarama.AclOperationDescribe)
		for _, topic := range groups[group] {
			ps.add(sarama.AclResourceTopic, topic, sarama.AclOperationRead, sarama.AclOperationDescribe)
			ps.add(sarama.AclResourceTopic, events.DeadLetterTopic(topic, group), sarama.AclOperationWrite, sarama.AclOperationDescribe)
		}
	}
	if slices.ContainsFunc(ps, func(p Permission) bool { return p.Operation == sarama.AclOperationWrite }) {
		ps.add(sarama.AclResourceCluster, "kafka-cluster", sarama.AclOperationIdempotentWrite) // the idempotent producer
	}
	return ps
}

// The principals, besides each service's own (its name), that a service's kafka-setup
// grants by default: the operators' dead-letter tool, the read-only viewer, and the
// auditor of its dead letters.
const (
	OperatorPrincipal = "dlq"
	ViewerPrincipal   = "kafka-ui"
	AuditorPrincipal  = "reconciliation-service"
)

// OperatorPermissions are what the operators' dead-letter tool (cmd/dlq) may do with the
// dead letters of a service's groups: read each dead-letter topic, send its records back
// to the topic they came from (which a replay is: so the operator may write those
// topics, and nothing else of the service's), and read and write ledger, where each
// replay is recorded. groups is the service's services.Service.Groups().
func OperatorPermissions(groups map[string][]string, ledger string) []Permission {
	var ps permissions
	for _, group := range sortedKeys(groups) {
		for _, topic := range groups[group] {
			ps.add(sarama.AclResourceTopic, events.DeadLetterTopic(topic, group), sarama.AclOperationRead, sarama.AclOperationDescribe)
			ps.add(sarama.AclResourceTopic, topic, sarama.AclOperationWrite, sarama.AclOperationDescribe)
		}
	}
	ps.add(sarama.AclResourceTopic, ledger, sarama.AclOperationRead, sarama.AclOperationWrite, sarama.AclOperationDescribe)
	ps.add(sarama.AclResourceCluster, "kafka-cluster", sarama.AclOperationIdempotentWrite)
	return ps
}

// AuditorPermissions are what reconciliation-service may see of a service's dead letters,
// to report those not replayed: what the operators' tool may read (each dead-letter topic
// of the service's groups, and the ledger of replays), and nothing it may write.
func AuditorPermissions(groups map[string][]string, ledger string) []Permission {
	operator := OperatorPermissions(groups, ledger)
	var ps permissions
	for _, p := range operator {
		read := slices.Contains(operator, Permission{Resource: p.Resource, Name: p.Name, Operation: sarama.AclOperationRead})
		if p.Resource == sarama.AclResourceTopic && read && (p.Operation == sarama.AclOperationRead || p.Operation == sarama.AclOperationDescribe) {
			ps.add(p.Resource, p.Name, p.Operation)
		}
	}
	return ps
}

// ViewerPermissions are what a read-only viewer (Kafka UI) may see of service: the
// topics it writes and reads, their records and settings, its groups and their offsets,
// and the cluster's description. Nothing it may change.
func ViewerPermissions(service string, groups map[string][]string) []Permission {
	var ps permissions
	for _, topic := range Topics(Permissions(service, groups)) {
		ps.add(sarama.AclResourceTopic, topic, sarama.AclOperationRead, sarama.AclOperationDescribe, sarama.AclOperationDescribeConfigs)
	}
	for _, group := range sortedKeys(groups) {
		ps.add(sarama.AclResourceGroup, group, sarama.AclOperationDescribe)
	}
	ps.add(sarama.AclResourceCluster, "kafka-cluster", sarama.AclOperationDescribe, sarama.AclOperationDescribeConfigs)
	return ps
}

// permissions is a list of Permission that holds each once, in the order added.
type permissions []Permission

func (ps *permissions) add(r sarama.AclResourceType, name string, ops ...sarama.AclOperation) {
	for _, op := range ops {
		if p := (Permission{Resource: r, Name: name, Operation: op}); !slices.Contains(*ps, p) {
			*ps = append(*ps, p)
		}
	}
}

func sortedKeys(groups map[string][]string) []string {
	return slices.Sorted(maps.Keys(groups))
}

// Grant allows principal ("User:payment-service") ps, from any host, through admin (a
// principal allowed to alter ACLs).
func Grant(admin sarama.ClusterAdmin, principal string, ps []Permission) error {
	acls := make([]*sarama.ResourceAcls, 0, len(ps))
	for _, p := range ps {
		acls = append(acls, &sarama.ResourceAcls{
			Resource: sarama.Resource{ResourceType: p.Resource, ResourceName: p.Name, ResourcePatternType: sarama.AclPatternLiteral},
			Acls:     []*sarama.Acl{{Principal: principal, Host: "*", Operation: p.Operation, PermissionType: sarama.AclPermissionAllow}},
		})
	}
	if err := admin.CreateACLs(acls); err != nil {
		return fmt.Errorf("grant %s: %w", principal, err)
	}
	return nil
}

// Topics are the topics ps name, in order, each once.
func Topics(ps []Permission) []string {
	var topics []string
	for _, p := range ps {
		if p.Resource == sarama.AclResourceTopic && !slices.Contains(topics, p.Name) {
			topics = append(topics, p.Name)
		}
	}
	return topics
}
