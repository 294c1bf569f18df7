#!/usr/bin/env bash
# Keycloak's server, at the version tools/keycloak/pom.xml pins (the version of
# docker-compose.yml's image): unpacked from the Maven repository with
# `mvn dependency:unpack-dependencies` on the first run, and again whenever the pom changes,
# into .data/keycloak/dist/<version>/keycloak-<version>. Prints that folder (bin/kc.sh).
#
# The first `kc.sh start-dev` from that folder rewrites its lib/quarkus for dev mode
# (Quarkus re-augmentation, 15-25 s); e2e/keycloak_test.go holds the same lock while it
# starts Keycloak, so two test runs never rewrite it at once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/maven-dist.sh"
pom=$root/tools/keycloak/pom.xml
fetch() {
	# The plugin's markers go with the server, not into tools/keycloak/target.
	mvn -B -Dstyle.color=never -f "$pom" dependency:unpack-dependencies -DincludeTypes=zip \
		-DoutputDirectory="$dist" -DmarkersDirectory="$dist/.markers" &&
		test -x "$dist/keycloak-$version/bin/kc.sh"
}
maven_dist ensure-keycloak "$pom" keycloak.version keycloak "Keycloak's server (about 160 MB)" fetch
echo "$dist/keycloak-$version"
