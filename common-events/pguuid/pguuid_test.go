package pguuid_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/orderflow/common-events/pguuid"
	"github.com/orderflow/devstack/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// pgx alone has no binary plan for a string array as uuid[] (so it sent such arrays as
// text, for PostgreSQL to parse); registered, it has one.
func TestAStringArrayIsSentInBinary(t *testing.T) {
	ids := []string{"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"}
	m := pgtype.NewMap()
	if plan := m.PlanEncode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids); plan != nil {
		t.Fatalf("pgx now encodes []string as uuid[] in binary itself (%T): package pguuid is not needed", plan)
	}
	pguuid.Register(m)
	buf, err := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x01, 0x9a, 0x8f, 0x3e, 0x6c, 0x19, 0x7d, 0x4a, 0x8e, 0x55, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f}; len(buf) < 16 || string(buf[len(buf)-16:]) != string(want) {
		t.Errorf("encoded % x, want it to end with the sixteen bytes % x", buf, want)
	}
}

// Every string is encoded as the uuid PostgreSQL reads from it as text (uuid_in), and
// refused where PostgreSQL refuses it (pgx then sends that one as text, as before, for
// PostgreSQL to refuse); and PostgreSQL reads what is sent in binary as that uuid.
func TestAStringIsTheUUIDPostgreSQLReads(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t) // registered, as the services' pools are
	plain, err := pgx.Connect(ctx, pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(ctx)
	m := pgtype.NewMap()
	pguuid.Register(m)
	for _, s := range []string{
		"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "019A8F3E-6C19-7D4A-8E55-0A1B2C3D4E5F", "019a8f3e6c197d4a8e550a1b2c3d4e5f",
		"{019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f}", "019a-8f3e-6c19-7d4a-8e55-0a1b-2c3d-4e5f", "{019a8f3e6c197d4a8e550a1b2c3d4e5f}",
		"", "{}", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f0", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f-",
		"0-19a8f3e6c197d4a8e550a1b2c3d4e5f", "019a8f3e--6c19-7d4a-8e55-0a1b2c3d4e5f", "-019a8f3e6c197d4a8e550a1b2c3d4e5f",
		" 019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f ", "{019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f",
		"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f}", "g19a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5\u00e9",
	} {
		var text string
		terr := plain.QueryRow(ctx, `SELECT $1::uuid::text`, s).Scan(&text)
		buf, berr := m.Encode(pgtype.UUIDOID, pgtype.BinaryFormatCode, s, nil)
		if (terr == nil) != (berr == nil) {
			t.Errorf("%q: PostgreSQL reads %q, %v; encoded % x, %v", s, text, terr, buf, berr)
			continue
		}
		if terr != nil {
			continue
		}
		if got := fmt.Sprintf("%x-%x-%x-%x-%x", buf[0:4], buf[4:6], buf[6:8], buf[8:10], buf[10:16]); got != text {
			t.Errorf("%q: encoded %s, PostgreSQL reads %s", s, got, text)
		}
		var back string
		if err := pool.QueryRow(ctx, `SELECT ($1::uuid[])[1]::text`, []string{s}).Scan(&back); err != nil || back != text {
			t.Errorf("%q sent in binary: PostgreSQL read %q, %v; want %q", s, back, err, text)
		}
	}
}
