#!/usr/bin/env bash
# Prints an access token from the compose stack's Keycloak (docker compose up), for curl:
#   TOKEN=$(scripts/compose-token.sh customer)
#   curl -H "Authorization: Bearer $TOKEN" http://localhost:8080/orders
# customer is ada (5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93), customer2 is grace
# (9d7e2c1a-4b3f-4e8d-a6c5-1f0e2d3c4b5a): the password grant on the public client
# orderflow-web. operator is the orderflow-operator client's service account: the client
# credentials grant. The passwords and the secret are the dev-only ones of
# deploy/keycloak/orderflow-realm.json. KEYCLOAK_URL points at another Keycloak.
set -euo pipefail
url=${KEYCLOAK_URL:-http://localhost:8180}/realms/orderflow/protocol/openid-connect/token
case "${1:-}" in
customer) form=(-d grant_type=password -d client_id=orderflow-web -d username=ada -d password=ada-demo-password) ;;
customer2) form=(-d grant_type=password -d client_id=orderflow-web -d username=grace -d password=grace-demo-password) ;;
operator) form=(-d grant_type=client_credentials -d client_id=orderflow-operator -d client_secret=orderflow-operator-dev-secret) ;;
*)
	echo "usage: $0 customer|customer2|operator" >&2
	exit 2
	;;
esac
if ! answer=$(curl -sS "${form[@]}" "$url"); then
	echo "compose-token: Keycloak does not answer at $url: is the stack up (docker compose up)?" >&2
	exit 1
fi
# A JWT is base64url and dots: no quote or escape can occur in it.
token=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$answer")
if [ -z "$token" ]; then
	echo "compose-token: no token from $url: $answer" >&2
	exit 1
fi
echo "$token"
