package httpapi

import _ "embed"

// openAPIDocument describes this API and the Stripe webhook app.Run adds to it;
// openapi_test.go keeps it true and make lint lints it.
//
//go:embed openapi.yaml
var openAPIDocument []byte
