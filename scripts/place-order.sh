#!/usr/bin/env bash
# Places an order on a running orderflow and follows it to its final state.
#   scripts/place-order.sh [payment_method] [email]
# payment_method: tok_visa (default), tok_mastercard, tok_chargeDeclined,
#                 tok_chargeDeclinedInsufficientFunds, or anything else (invalid).
# ORDER_URL, PAYMENT_URL and NOTIFICATION_URL point it at another stack.
set -euo pipefail
order_url=${ORDER_URL:-http://127.0.0.1:8080}
payment_url=${PAYMENT_URL:-http://127.0.0.1:8081}
notification_url=${NOTIFICATION_URL:-http://127.0.0.1:8082}
token=${1:-tok_visa}
email=${2:-ada@example.com}

field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }

echo "POST $order_url/orders (payment_method $token)"
response=$(curl -sS -D - "$order_url/orders" -H 'Content-Type: application/json' -d "{
  \"customer_id\": \"5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93\",
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
  body=$(curl -sS "$order_url/orders/$id")
  status=$(echo "$body" | field status)
  [ "$status" != PENDING_PAYMENT ] && break
  sleep 0.1
done
echo "order $id is $status"
echo "$body"
echo
echo "payments:      $(curl -sS "$payment_url/payments?order_id=$id")"
sleep 0.5
echo "notifications: $(curl -sS "$notification_url/notifications?order_id=$id")"
[ "$status" != PENDING_PAYMENT ]
