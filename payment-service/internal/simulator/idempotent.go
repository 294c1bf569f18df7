//go:build !orderflow_planted_double_charge

package simulator

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// onChargeConflict is what a charge under a key the ledger holds does: nothing, so the
// first charge's answer is given again. (The chaos run's planted bug, built with the tag
// orderflow_planted_double_charge, charges again instead: planted.go.)
const onChargeConflict = "ON CONFLICT (idempotency_key) DO NOTHING"

// plant readies the planted bug; without it, there is nothing to ready.
func plant(context.Context, *pgxpool.Pool) error { return nil }
