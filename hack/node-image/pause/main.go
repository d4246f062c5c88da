// Command pause is the pod sandbox's process for the offline kind node image: it holds the pod's
// namespaces, reaps the zombies of a shared PID namespace, and exits 0 on SIGINT or SIGTERM. It is
// built static and shipped FROM scratch as the image kubeadm and containerd name as the sandbox
// image (hack/node-image/build.sh). On a machine with registry access the real pause image is used.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("pause (lastcall offline kind node image)")
		return
	}
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
