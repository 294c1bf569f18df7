#!/usr/bin/env bash
# Places an order on a running orderflow and follows it to its final state.
#   scripts/place-order.sh [payment_method] [email]
# payment_method: tok_visa (default), tok_mastercard, tok_chargeDeclined,
#                 tok_chargeDeclinedInsufficientFunds, or anything else (invalid).
# ORDER_URL, PAYMENT_URL and NOTIFICATION_URL point it at another stack; CUSTOMER_TOKEN
# and OPERATOR_TOKEN are the bearer tokens it uses (default: the ones make run writes to
# .data/tokens; for compose, TOKEN=$(scripts/compose-token.sh customer) and so on).
set -euo pipefail
cd "$(dirname "$0")/.."
order_url=${ORDER_URL:-http://127.0.0.1:8080}
payment_url=${PAYMENT_URL:-http://127.0.0.1:8081}
notification_url=${NOTIFICATION_URL:-http://127.0.0.1:8082}
token=${1:-tok_visa}
email=${2:-ada@example.com}

read_token() { # $1: the variable's value, $2: the file make run writes
  if [ -n "$1" ]; then echo "$1"; return; fi
  if [ -r "$2" ]; then cat "$2"; return; fi
  echo "no token: set $3 or run make run, which writes $2" >&2
  exit 1
}
customer=$(read_token "${CUSTOMER_TOKEN:-}" .data/tokens/customer.jwt CUSTOMER_TOKEN)
operator=$(read_token "${OPERATOR_TOKEN:-}" .data/tokens/operator.jwt OPERATOR_TOKEN)

field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }

echo "POST $order_url/orders (payment_method $token)"
response=$(curl -sS -D - "$order_url/orders" -H "Authorization: Bearer $customer" -H 'Content-Type: application/json' -d "{
  \"customer_email\": \"$email\",
  \"currency\": \"EUR\",
  \"items\": [{\"sku\": \"BOOK-42\", \"quantity\": 2, \"unit_price_cents\": 1999},
            {\"sku\": \"PEN-7\", \"quantity\": 1, \"unit_price_cents\": 350}],
  \"payment_method\": \"$token\"
}")
echo "$response" | tr -d '\r' | sed -n '1p;/^Location:/p'
body=$(echo "$response" | tail -n 1)
id=$(echo "$body" | field id)
if [ -z "$id" ]; then
  echo "$body"
  exit 1
fi
echo "order $id is $(echo "$body" | field status)"

status=PENDING_PAYMENT
for _ in $(seq 1 100); do
  body=$(curl -sS "$order_url/orders/$id" -H "Authorization: Bearer $customer")
  status=$(echo "$body" | field status)
  [ "$status" != PENDING_PAYMENT ] && break
  sleep 0.1
done
echo "order $id is $status"
echo "$body"
echo
echo "payments:      $(curl -sS "$payment_url/payments?order_id=$id" -H "Authorization: Bearer $operator")"
sleep 0.5
echo "notifications: $(curl -sS "$notification_url/notifications?order_id=$id" -H "Authorization: Bearer $operator")"
[ "$status" != PENDING_PAYMENT ]
