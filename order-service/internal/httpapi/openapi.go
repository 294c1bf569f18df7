package httpapi

import _ "embed"

// openAPIDocument describes this API; openapi_test.go keeps it true and make lint lints it.
//
//go:embed openapi.yaml
var openAPIDocument []byte
