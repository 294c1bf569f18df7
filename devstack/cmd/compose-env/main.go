// Command compose-env makes, in the repository's root, what docker-compose.yml needs and
// the repository does not hold (devstack/compose): .env with random secrets, kept once
// made, and the broker's certificate. make up runs it first.
package main

import (
	"fmt"
	"os"

	"github.com/orderflow/devstack/compose"
	"github.com/orderflow/devstack/stack"
)

func main() {
	root, err := stack.FindRoot()
	if err == nil {
		var added []string
		if _, added, err = compose.Ensure(root); err == nil && len(added) > 0 {
			fmt.Printf("compose-env: %d new secrets in %s (0600, ignored by git): %v\n", len(added), compose.EnvFile, added)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose-env: %v\n", err)
		os.Exit(1)
	}
}
