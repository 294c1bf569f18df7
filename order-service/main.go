// Command order-service accepts orders over REST and follows them to their outcome.
package main

import (
	"os"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/order-service/app"
)

func main() { os.Exit(platform.Main(app.Name, app.Run, app.Consumes())) }
