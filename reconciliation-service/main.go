// Command reconciliation-service watches what the other services say about each order and
// reports where they disagree.
package main

import (
	"os"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/reconciliation-service/app"
)

func main() { os.Exit(platform.Main(services.Reconciliation, app.Run)) }
