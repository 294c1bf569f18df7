package httpapi

import (
	_ "embed"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// openAPIDocument describes this API; openapi_test.go keeps it true and make lint lints it.
//
//go:embed openapi.yaml
var openAPIDocument []byte

// openAPIMediaType is RFC 9512's media type for YAML.
const openAPIMediaType = "application/yaml"

// openAPI serves GET and HEAD /openapi.yaml: the document the service was built with.
func openAPI() echo.HandlerFunc {
	length := strconv.Itoa(len(openAPIDocument))
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set(echo.HeaderContentLength, length) // HEAD too, which writes no body
		if c.Request().Method == http.MethodHead {
			h.Set(echo.HeaderContentType, openAPIMediaType)
			return c.NoContent(http.StatusOK)
		}
		return c.Blob(http.StatusOK, openAPIMediaType, openAPIDocument)
	}
}
