//go:build orderflow_planted_double_charge

package simulator

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The chaos run's planted bug (make chaos-planted): a provider that ignores idempotency
// keys and charges again for every request. Built only with the tag
// orderflow_planted_double_charge, which no image and no make run uses.
const onChargeConflict = ""

var planted sync.Once

// plant drops the ledger's key, which would refuse the second charge the bug makes.
func plant(ctx context.Context, pool *pgxpool.Pool) error {
	var err error
	planted.Do(func() {
		_, err = pool.Exec(ctx, `ALTER TABLE provider_charges DROP CONSTRAINT IF EXISTS provider_charges_pkey`)
	})
	if err != nil {
		return fmt.Errorf("planting the bug: %w", err)
	}
	return nil
}
