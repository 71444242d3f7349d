// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3/etcdmain), wrapped in a module of
// our own because `go install go.etcd.io/etcd/server/v3@...` refuses modules with replace directives.
// envtest runs it as its storage backend (see hack/envtest-assets.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
