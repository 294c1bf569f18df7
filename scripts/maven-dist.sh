# Sourced by ensure-kafka.sh and ensure-keycloak.sh: a distribution fetched with Maven at
# the version a pom pins, once, and again whenever the pom changes.
#
#   maven_dist NAME POM VERSION_TAG FOLDER WHAT FETCH
#
# NAME prefixes every message; VERSION_TAG is the pom property holding the version;
# the distribution goes to ${ORDERFLOW_DATA_DIR:-.data}/FOLDER/dist/<version>, left in
# $dist (and the version in $version); WHAT names it in messages; FETCH is a function that
# fills $dist with Maven, its output going to $dist.mvn.log. Test binaries may ask at the
# same time: one fetches, the others wait for it (the lock stays held on fd 9 until the
# calling script exits).
maven_dist() {
	local name=$1 pom=$2 tag=$3 folder=$4 what=$5 fetch=$6
	local root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	if ! command -v java >/dev/null 2>&1; then
		echo "$name: java not found: $what needs Java 17 or later (Debian: apt-get install openjdk-17-jre-headless)" >&2
		exit 1
	fi
	version=$(sed -n "s:.*<$tag>\(.*\)</$tag>.*:\1:p" "$pom")
	if [ -z "$version" ]; then
		echo "$name: $pom names no <$tag>" >&2
		exit 1
	fi
	dist=${ORDERFLOW_DATA_DIR:-$root/.data}/$folder/dist/$version
	mkdir -p "$(dirname "$dist")"
	exec 9>"$dist.lock"
	flock 9
	if cmp -s "$pom" "$dist/.pom"; then
		return
	fi
	if ! command -v mvn >/dev/null 2>&1; then
		echo "$name: mvn not found: Maven fetches $what (Debian: apt-get install maven)" >&2
		exit 1
	fi
	rm -rf "$dist"
	mkdir -p "$dist"
	echo "$name: fetching $what $version with Maven…" >&2
	if ! "$fetch" >"$dist.mvn.log" 2>&1; then
		tail -30 "$dist.mvn.log" >&2
		echo "$name: mvn could not fetch $what (log: $dist.mvn.log)" >&2
		exit 1
	fi
	cp "$pom" "$dist/.pom"
}
