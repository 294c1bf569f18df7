#!/usr/bin/env bash
# Apache Kafka's broker and tools as jars, at the version tools/kafka/pom.xml pins (the
# version of docker-compose.yml's image): fetched from the Maven repository with
# `mvn dependency:copy-dependencies` on the first run, and again whenever the pom changes,
# into .data/apache-kafka/dist/<version>/libs. Prints that folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/maven-dist.sh"
pom=$root/tools/kafka/pom.xml
fetch() {
	mvn -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dist/libs"
}
maven_dist ensure-kafka "$pom" kafka.version apache-kafka "Apache Kafka's jars" fetch
echo "$dist/libs"
