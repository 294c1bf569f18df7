// Package migrations holds the goose SQL migrations of orderflow's three databases, embedded,
// and applies them. Each service migrates its own database at start-up.
//
// shared/ is the event plumbing's schema (outbox, inbox), written once and applied first
// in every database; order/, payment/ and notification/ hold each service's own tables.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed shared/*.sql order/*.sql payment/*.sql notification/*.sql
var FS embed.FS

// The migrations of each database: the shared plumbing followed by the service's own.
var (
	Orders        fs.FS = union{"shared", "order"}
	Payments      fs.FS = union{"shared", "payment"}
	Notifications fs.FS = union{"shared", "notification"}
)

// Up applies every pending migration of fsys to db. It holds a PostgreSQL advisory lock
// meanwhile, so several instances of a service can start at once.
func Up(ctx context.Context, db *sql.DB, fsys fs.FS) error {
	return up(ctx, db, fsys, "goose_db_version")
}

// UpPoolTracked applies fsys through a pool as UpPool does, its versions kept in a table of
// their own: for a part of a service whose schema is not the service's (the payment
// simulator's ledger), migrated beside it.
func UpPoolTracked(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, versions string) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return up(ctx, db, fsys, versions)
}

func up(ctx context.Context, db *sql.DB, fsys fs.FS, versions string) error {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithSessionLocker(locker), goose.WithTableName(versions))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// UpPool applies every pending migration of fsys through a pgx pool.
func UpPool(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	return Up(ctx, db, fsys)
}

// union shows the files of several folders of FS as one flat folder.
type union []string

func (u union) Open(name string) (fs.File, error) {
	if name == "." {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	for _, dir := range u {
		if f, err := FS.Open(dir + "/" + name); err == nil {
			return f, nil
		}
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func (u union) ReadDir(name string) ([]fs.DirEntry, error) {
	if name != "." {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	var all []fs.DirEntry
	for _, dir := range u {
		es, err := FS.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		all = append(all, es...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name() < all[j].Name() })
	return all, nil
}
