// Command payment-service charges for orders, once each.
package main

import (
	"os"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/payment-service/app"
)

func main() { os.Exit(platform.Main(services.Payment, app.Run)) }
