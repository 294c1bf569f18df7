package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// FieldsError is a JSON body whose fields are wrong: a name no field has, or a value of
// the wrong type. A handler answers it 422 with the fields listed.
type FieldsError struct {
	Fields []FieldError
}

func (e *FieldsError) Error() string {
	msgs := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		msgs[i] = f.Field + " " + f.Message
	}
	return strings.Join(msgs, "; ")
}

// DecodeJSON reads a JSON body into v strictly: application/json only (a 415 *Problem),
// at most maxBytes (413), one well-formed JSON value and nothing after it (400), known
// fields of the right types (a *FieldsError). A body that stopped arriving is its
// *BodyError.
func DecodeJSON(contentType string, body io.Reader, maxBytes int64, v any) error {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != echo.MIMEApplicationJSON {
		return NewProblem(http.StatusUnsupportedMediaType, "unsupported_media_type", "Unsupported Media Type",
			"send the body as application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, io.NopCloser(body), maxBytes))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		// Anything after the value, even a stray "}", makes the body malformed; reading to
		// the end also notices a body that is too large only past the value.
		if _, terr := dec.Token(); terr != io.EOF {
			err = terr
			if err == nil {
				err = errors.New("unexpected data after the JSON value")
			}
		}
	}
	if err == nil {
		return nil
	}
	var tooBig *http.MaxBytesError
	var unread *BodyError
	switch {
	case errors.As(err, &unread):
		return err // the body's own problem: it stopped arriving
	case errors.As(err, &tooBig):
		return NewProblem(http.StatusRequestEntityTooLarge, "body_too_large", "Request Entity Too Large",
			fmt.Sprintf("the body must be at most %d bytes", maxBytes))
	case errors.Is(err, io.EOF):
		return NewProblem(http.StatusBadRequest, "malformed_json", "Malformed JSON", "the request body is empty")
	}
	if fields := fieldErrors(err, ""); fields != nil {
		return &FieldsError{Fields: fields}
	}
	return NewProblem(http.StatusBadRequest, "malformed_json", "Malformed JSON", "the request body is not valid JSON: "+err.Error())
}

// UnmarshalStrict decodes raw, one JSON value that is part of a body already read (an
// item of an array), into v, refusing unknown fields: a *FieldsError names the fields
// under prefix ("items[2]").
func UnmarshalStrict(raw []byte, prefix string, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if fields := fieldErrors(err, prefix); fields != nil {
		return &FieldsError{Fields: fields}
	}
	return err
}

// fieldErrors turns a decoding error that is about one field (wrong type, unknown name)
// into a field error under prefix, or returns nil for any other error.
func fieldErrors(err error, prefix string) []FieldError {
	if err == nil {
		return nil
	}
	path := func(field string) string {
		if prefix == "" {
			return field
		}
		return prefix + "." + field
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = prefix
		} else {
			field = path(field)
		}
		if field == "" {
			field = "(body)"
		}
		return []FieldError{{Field: field, Message: fmt.Sprintf("must be a %s, got a JSON %s", jsonType(typeErr.Type.Kind().String()), typeErr.Value)}}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return []FieldError{{Field: path(name), Message: "is not a known field"}}
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "int", "int64", "int32":
		return "whole number"
	case "string":
		return "string"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	}
	return kind
}
