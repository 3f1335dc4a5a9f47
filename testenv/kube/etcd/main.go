// Command etcd is the etcd server of the test control plane: the upstream etcdmain
// entry point at the version k8s.io/kubernetes requires (see ../go.mod), built in the
// same module so it shares every dependency version with kube-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
