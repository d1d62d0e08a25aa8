// Command pause is the sandbox ("pause") container of the local cluster's node: it holds
// a pod's namespaces open, reaps the zombies of processes that end up as its children,
// and exits 0 on SIGINT or SIGTERM. No registry is reachable from these machines, so the
// node cannot pull registry.k8s.io/pause; tests/cluster/local-control-plane builds this
// static binary into an OCI image instead and makes it containerd's sandbox_image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		os.Stdout.WriteString("turnpike pause\n")
		return
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
