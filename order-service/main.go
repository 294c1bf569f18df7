// Command order-service accepts orders over REST and follows them to their outcome.
package main

import (
	"os"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/order-service/app"
)

func main() { os.Exit(platform.Main(services.Order, app.Run)) }
