// Command payment-service charges for orders, once each.
package main

import (
	"os"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/payment-service/app"
)

func main() { os.Exit(platform.Main(app.Name, app.Run, app.Consumes())) }
