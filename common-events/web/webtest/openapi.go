package webtest

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
)

// OpenAPI is a service's OpenAPI document, parsed, with a validator for requests and
// responses: what each service's openapi_test.go holds its API to.
type OpenAPI struct {
	Raw       []byte
	Model     *v3.Document
	Validator validator.Validator
	// Schemas validates a value against one of the document's schemas, with the same
	// options (an event of a stream, say).
	Schemas schema_validation.SchemaValidator
}

// LoadOpenAPI reads the document at path, which must be a valid OpenAPI 3.1.0 document.
// Formats (uuid, date-time…) are checked, and strict mode reports any property or header
// of a documented response that the document does not describe.
func LoadOpenAPI(t testing.TB, path string) OpenAPI {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Fatalf("%s is OpenAPI %s, want 3.1.0", path, v)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	opts := []config.Option{config.WithFormatAssertions(), config.WithStrictMode()}
	v, errs := validator.NewValidator(doc, opts...)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", path, errs)
	}
	if ok, errs := v.ValidateDocument(); !ok {
		t.Fatalf("%s is not a valid OpenAPI document: %v", path, errs)
	}
	return OpenAPI{Raw: raw, Model: &m.Model, Validator: v, Schemas: schema_validation.NewSchemaValidator(opts...)}
}

// Documented lists every "METHOD /path status" the document describes.
func (d OpenAPI) Documented() []string {
	var out []string
	for path, item := range d.Model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			for status := range op.Responses.Codes.KeysFromOldest() {
				out = append(out, strings.ToUpper(method)+" "+path+" "+status)
			}
		}
	}
	return out
}

// Operations lists every "METHOD /path" the document describes.
func (d OpenAPI) Operations() []string {
	var out []string
	for path, item := range d.Model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().KeysFromOldest() {
			out = append(out, strings.ToUpper(method)+" "+path)
		}
	}
	return out
}

// ValidationErrors says what the validator found, a line each.
func ValidationErrors(errs []*liberrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  %s: %s\n", e.Message, e.Reason)
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "    %s (%s): %s\n", f.FieldPath, f.KeywordLocation, f.Reason)
		}
	}
	return b.String()
}
