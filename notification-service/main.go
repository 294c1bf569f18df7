// Command notification-service emails customers about their orders.
package main

import (
	"os"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/notification-service/app"
)

func main() { os.Exit(platform.Main(services.Notification, app.Run)) }
