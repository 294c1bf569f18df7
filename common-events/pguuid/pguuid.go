// Package pguuid has pgx send a UUID given as a string in PostgreSQL's binary form.
//
// orderflow's ids are strings (the events carry them so), and its batch statements take
// them as arrays ($1::uuid[]). pgx has no binary encoding of a string as a uuid, so it sent
// each such array as text, which PostgreSQL then parsed element by element (array_in,
// uuid_in); sixteen bytes each are read as they are.
package pguuid

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// AfterConnect registers the encoding on conn: a pgxpool.Config's AfterConnect.
func AfterConnect(_ context.Context, conn *pgx.Conn) error {
	Register(conn.TypeMap())
	return nil
}

// Register has m encode a string as a uuid in binary, alone or in an array (uuid[]).
// Anything else, and every decoding, is pgx's as before. A string that is not a UUID as
// PostgreSQL reads one is not encoded; pgx then sends its parameter as text, as before,
// and PostgreSQL refuses it.
func Register(m *pgtype.Map) {
	uuid := &pgtype.Type{Name: "uuid", OID: pgtype.UUIDOID, Codec: codec{}}
	m.RegisterType(uuid)
	m.RegisterType(&pgtype.Type{Name: "_uuid", OID: pgtype.UUIDArrayOID, Codec: &pgtype.ArrayCodec{ElementType: uuid}})
}

type codec struct{ pgtype.UUIDCodec }

func (c codec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(string); ok && format == pgtype.BinaryFormatCode {
		return encodeString{}
	}
	return c.UUIDCodec.PlanEncode(m, oid, format, value)
}

type encodeString struct{}

func (encodeString) Encode(value any, buf []byte) ([]byte, error) {
	s := value.(string)
	var u [16]byte
	if !parse(s, &u) {
		return nil, fmt.Errorf("invalid input syntax for type uuid: %q", s)
	}
	return append(buf, u[:]...), nil
}

// parse reads s as PostgreSQL's uuid_in does: 32 hex digits, in either case, with a hyphen
// allowed after any group of four but the last, the whole optionally within braces.
func parse(s string, u *[16]byte) bool {
	if len(s) > 0 && s[0] == '{' {
		if s[len(s)-1] != '}' {
			return false
		}
		s = s[1 : len(s)-1]
	}
	for i := range u {
		if len(s) < 2 {
			return false
		}
		hi, lo := nibble(s[0]), nibble(s[1])
		if hi < 0 || lo < 0 {
			return false
		}
		u[i] = byte(hi<<4 | lo)
		s = s[2:]
		if len(s) > 0 && s[0] == '-' && i%2 == 1 && i < len(u)-1 {
			s = s[1:]
		}
	}
	return s == ""
}

func nibble(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
