#!/usr/bin/env bash
# The compose stack's Apache Kafka (docker-compose.yml's kafka service runs it in the
# apache/kafka image): deploy/kafka/server.properties and the logins, which hold secrets,
# made from the environment (.env, which make up writes). The storage is formatted on the
# first start with a SCRAM-SHA-512 login for every KAFKA_PASSWORD_<NAME> variable (admin,
# each service, dlq, kafka-ui: devstack/compose.KafkaPrincipals); principals are made at
# format time only.
set -euo pipefail
umask 077
home=${KAFKA_HOME:-/opt/kafka}
properties=${KAFKA_SERVER_PROPERTIES:-/etc/orderflow/kafka/server.properties}
conf=${KAFKA_CONF:-/tmp/orderflow-kafka.properties}
# How Kafka's own tools log in as admin, in the container (the health check; by hand:
# docker compose exec kafka /opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:29092
# --command-config /tmp/orderflow-admin.properties --list).
client=${KAFKA_ADMIN_PROPERTIES:-/tmp/orderflow-admin.properties}
: "${KAFKA_PASSWORD_ADMIN:?the kafka service needs KAFKA_PASSWORD_ADMIN (make up writes .env)}"
: "${CLUSTER_ID:?the kafka service needs CLUSTER_ID}"

admin=$KAFKA_PASSWORD_ADMIN
{
	cat "$properties"
	# The node logs in to its own listeners as admin.
	login="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin\";"
	echo "listener.name.internal.scram-sha-512.sasl.jaas.config=$login"
	echo "listener.name.external.scram-sha-512.sasl.jaas.config=$login"
	echo "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin\" user_admin=\"$admin\";"
} >"$conf"
printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=SCRAM-SHA-512" \
	"sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin\";" >"$client"

# Every KAFKA_PASSWORD_<NAME> is the login <name> (lower case, "_" as "-").
scram=()
principals=()
for var in $(compgen -v KAFKA_PASSWORD_ | sort); do
	name=${var#KAFKA_PASSWORD_}
	name=${name,,}
	name=${name//_/-}
	principals+=("$name")
	scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=${!var}]")
done

data=$(sed -n 's/^log\.dirs=//p' "$conf")
if [ ! -f "$data/meta.properties" ]; then
	"$home/bin/kafka-storage.sh" format --cluster-id "$CLUSTER_ID" --config "$conf" "${scram[@]}"
	echo "${principals[*]}" >"$data/orderflow-principals"
elif [ "$(cat "$data/orderflow-principals" 2>/dev/null)" != "${principals[*]}" ]; then
	echo "kafka: the principals changed since this volume was formatted (was: $(cat "$data/orderflow-principals" 2>/dev/null), now: ${principals[*]});" \
		"logins are made at format time: docker compose down -v starts afresh (docs/compose.md)" >&2
fi
exec "$home/bin/kafka-server-start.sh" "$conf"
