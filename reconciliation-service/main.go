// Command reconciliation-service watches what the other services say about each order and
// reports where they disagree.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/reconciliation-service/app"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "rebuild" { // app.Rebuild: run while the service is stopped
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := app.Rebuild(ctx, os.Getenv, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "%s rebuild: %v\n", services.Reconciliation.Name, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(platform.Main(services.Reconciliation, app.Run))
}
