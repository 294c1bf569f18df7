package httpapi_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/views/viewstest"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/notification-service/internal/httpapi"
	"github.com/orderflow/notification-service/internal/postgres"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// newAPI serves notification-service's API on a fresh database.
func newAPI(t *testing.T, is *issuer.Issuer) string {
	t.Helper()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(context.Background(), pool, migrations.Notifications); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(t.Output(), nil))
	api := httpapi.New(log, postgres.NewStore(pool, 0), func(context.Context) error { return nil }, auth.NewVerifier(is.Config(), nil))
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv.URL
}

// Bad input to the operators' views is a 4xx problem, never a 500: the shared suite.
func TestOperatorViewsRefuseBadInput(t *testing.T) {
	is := testenv.Issuer(t)
	viewstest.TestViews(t, viewstest.Views{
		URL: newAPI(t, is), Issuer: is, Routes: []string{"/notifications"}, OtherParam: "status=SENT", Table: "notifications",
	})
}
