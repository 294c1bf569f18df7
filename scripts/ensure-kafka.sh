#!/usr/bin/env bash
# Apache Kafka's broker and tools as jars, at the version tools/kafka/pom.xml pins (the
# version of docker-compose.yml's image): fetched from the Maven repository with
# `mvn dependency:copy-dependencies` on the first run, and again whenever the pom changes,
# into .data/apache-kafka/dist/<version>/libs. Prints that folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pom=$root/tools/kafka/pom.xml
if ! command -v java >/dev/null 2>&1; then
	echo "ensure-kafka: java not found: Apache Kafka needs Java 17 or later (Debian: apt-get install openjdk-17-jre-headless)" >&2
	exit 1
fi
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
if [ -z "$version" ]; then
	echo "ensure-kafka: $pom names no <kafka.version>" >&2
	exit 1
fi
dist=${ORDERFLOW_DATA_DIR:-$root/.data}/apache-kafka/dist/$version
stamp=$dist/.pom
# Test binaries may ask at the same time: one fetches, the others wait for it.
mkdir -p "$(dirname "$dist")"
exec 9>"$dist.lock"
flock 9
if ! cmp -s "$pom" "$stamp"; then
	if ! command -v mvn >/dev/null 2>&1; then
		echo "ensure-kafka: mvn not found: Maven fetches Apache Kafka's jars (Debian: apt-get install maven)" >&2
		exit 1
	fi
	rm -rf "$dist"
	mkdir -p "$dist"
	echo "ensure-kafka: fetching Apache Kafka $version's jars with Maven…" >&2
	if ! mvn -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$dist/libs" >"$dist.mvn.log" 2>&1; then
		tail -30 "$dist.mvn.log" >&2
		echo "ensure-kafka: mvn could not fetch Apache Kafka's jars (log: $dist.mvn.log)" >&2
		exit 1
	fi
	cp "$pom" "$stamp"
fi
echo "$dist/libs"
