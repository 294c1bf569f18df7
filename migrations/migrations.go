// Package migrations holds the goose SQL migrations of orderflow's four databases, embedded,
// and applies them. Each service migrates its own database at start-up.
//
// shared/ is the event plumbing's schema (outbox, inbox), written once and applied first
// in every database; order/, payment/, notification/ and reconciliation/ hold each
// service's own tables.
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

//go:embed shared/*.sql order/*.sql payment/*.sql notification/*.sql reconciliation/*.sql
var FS embed.FS

// The migrations of each database: the shared plumbing followed by the service's own.
var (
	Orders        fs.FS = union{"shared", "order"}
	Payments      fs.FS = union{"shared", "payment"}
	Notifications fs.FS = union{"shared", "notification"}
	// Reconciliation is reconciliation-service's read model; it writes no events, and
	// the shared tables give its consumer group the inbox.
	Reconciliation fs.FS = union{"shared", "reconciliation"}
)

// Up applies every pending migration of fsys to db. It holds a PostgreSQL advisory lock
// meanwhile, so several instances of a service can start at once.
func Up(ctx context.Context, db *sql.DB, fsys fs.FS) error {
	return up(ctx, db, fsys, "goose_db_version")
}

// UpOwn applies the migrations in folder dir of files through a pool, their versions in a
// table of their own (versions): for a part of a service that keeps a schema of its own
// beside the service's (the payment providers' ledgers), migrated apart from it.
func UpOwn(ctx context.Context, pool *pgxpool.Pool, files fs.FS, dir, versions string) error {
	fsys, err := fs.Sub(files, dir)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", versions, err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := up(ctx, db, fsys, versions); err != nil {
		return fmt.Errorf("%s: %w", versions, err)
	}
	return nil
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
