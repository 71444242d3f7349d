// Command bundle writes the OLM bundle (bundle/, bundle.Dockerfile) and, with -catalog, the file-based
// catalog (catalog/) from config/. `make bundle` and `make catalog` run it; see internal/olm.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/portcullis-dev/portcullis/internal/olm"
)

func main() {
	var o olm.Options
	catalog := flag.Bool("catalog", false, "also write the file-based catalog to "+olm.CatalogPath)
	flag.StringVar(&o.Root, "root", ".", "repository root (holding config/)")
	flag.StringVar(&o.Package, "package", "portcullis", "OLM package name")
	flag.StringVar(&o.Version, "version", "", "operator version, semantic, without a leading v (required)")
	flag.StringVar(&o.Image, "image", "", "manager image (required)")
	flag.StringVar(&o.BundleImage, "bundle-image", "", "bundle image the catalog points at (required with -catalog)")
	flag.StringVar(&o.Channel, "channel", "alpha", "channel, also the default channel")
	flag.Parse()
	if err := run(o, *catalog); err != nil {
		fmt.Fprintln(os.Stderr, "bundle:", err)
		os.Exit(1)
	}
}

func run(o olm.Options, catalog bool) error {
	if o.Version == "" || o.Image == "" || (catalog && o.BundleImage == "") {
		return fmt.Errorf("-version and -image are required, and -bundle-image with -catalog")
	}
	b, err := olm.BuildBundle(o)
	if err != nil {
		return err
	}
	// Stale manifests (a renamed object) must not survive a rebuild.
	if err := os.RemoveAll(filepath.Join(o.Root, "bundle", "manifests")); err != nil {
		return err
	}
	if err := b.Files.Write(o.Root); err != nil {
		return err
	}
	if !catalog {
		return nil
	}
	files, err := olm.BuildCatalog(o, b)
	if err != nil {
		return err
	}
	return files.Write(o.Root)
}
