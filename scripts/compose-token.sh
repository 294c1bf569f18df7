#!/usr/bin/env bash
# Prints an access token from the compose stack's Keycloak (docker compose up), for curl:
#   TOKEN=$(scripts/compose-token.sh customer)
#   curl -H "Authorization: Bearer $TOKEN" http://localhost:8080/orders
# customer is ada (5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93), customer2 is grace
# (9d7e2c1a-4b3f-4e8d-a6c5-1f0e2d3c4b5a): the password grant on the public client
# orderflow-web. operator is the orderflow-operator client's service account: the client
# credentials grant. The passwords and the secret are those make up wrote to .env
# (KEYCLOAK_ADA_PASSWORD, KEYCLOAK_GRACE_PASSWORD, KEYCLOAK_OPERATOR_SECRET), read from the
# environment if set there, else from .env. KEYCLOAK_URL points at another Keycloak.
set -euo pipefail
url=${KEYCLOAK_URL:-http://localhost:8180}/realms/orderflow/protocol/openid-connect/token
secret() { # NAME: from the environment, or the repository's .env
	if [ -n "${!1:-}" ]; then
		echo "${!1}"
		return
	fi
	local env
	env="$(dirname "$0")/../.env"
	local v
	v=$(sed -n "s/^$1=//p" "$env" 2>/dev/null | tail -n 1)
	if [ -z "$v" ]; then
		echo "compose-token: $1 is neither set nor in $env: run make up first" >&2
		exit 1
	fi
	echo "$v"
}
case "${1:-}" in
customer)
	pw=$(secret KEYCLOAK_ADA_PASSWORD)
	form=(-d grant_type=password -d client_id=orderflow-web -d username=ada -d "password=$pw")
	;;
customer2)
	pw=$(secret KEYCLOAK_GRACE_PASSWORD)
	form=(-d grant_type=password -d client_id=orderflow-web -d username=grace -d "password=$pw")
	;;
operator)
	pw=$(secret KEYCLOAK_OPERATOR_SECRET)
	form=(-d grant_type=client_credentials -d client_id=orderflow-operator -d "client_secret=$pw")
	;;
*)
	echo "usage: $0 customer|customer2|operator" >&2
	exit 2
	;;
esac
if ! answer=$(curl -sS "${form[@]}" "$url"); then
	echo "compose-token: Keycloak does not answer at $url: is the stack up (make up)?" >&2
	exit 1
fi
# A JWT is base64url and dots: no quote or escape can occur in it.
token=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$answer")
if [ -z "$token" ]; then
	echo "compose-token: no token from $url: $answer" >&2
	exit 1
fi
echo "$token"
