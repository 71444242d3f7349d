package olm

import (
	"bytes"
	"fmt"

	"github.com/operator-framework/operator-registry/alpha/declcfg"
	"github.com/operator-framework/operator-registry/alpha/property"
)

// CatalogPath is where the file-based catalog is written, relative to the repository root; `opm
// validate catalog` and `opm render catalog` read it, and `opm generate dockerfile catalog` makes its
// image.
const CatalogPath = "catalog/portcullis/catalog.yaml"

// BuildCatalog returns the file-based catalog for the bundle: one olm.package with the icon, one channel
// whose only entry is this version (skipRange: every earlier version upgrades to it), and one olm.bundle pointing at o.BundleImage. The bundle's
// properties are those `opm render` derives from a registry+v1 bundle image: olm.package (name and
// version), olm.gvk for every owned CRD, and olm.csv.metadata for consoles.
func BuildCatalog(o Options, b *Bundle) (Files, error) {
	csv := b.CSV
	if len(csv.Spec.Icon) == 0 {
		return nil, fmt.Errorf("the CSV has no icon")
	}
	icon, err := decodeB64(csv.Spec.Icon[0].Data)
	if err != nil {
		return nil, err
	}
	props := []property.Property{property.MustBuildPackage(o.Package, o.Version)}
	for _, crd := range b.CRDs {
		for _, v := range crd.Spec.Versions {
			if v.Served {
				props = append(props, property.MustBuildGVK(crd.Spec.Group, v.Name, crd.Spec.Names.Kind))
			}
		}
	}
	props = append(props, property.MustBuildCSVMetadata(*csv))
	cfg := declcfg.DeclarativeConfig{
		Packages: []declcfg.Package{{
			Schema: declcfg.SchemaPackage, Name: o.Package, DefaultChannel: o.Channel,
			Icon:        &declcfg.Icon{Data: icon, MediaType: csv.Spec.Icon[0].MediaType},
			Description: csv.Spec.Description,
		}},
		Channels: []declcfg.Channel{{
			Schema: declcfg.SchemaChannel, Package: o.Package, Name: o.Channel,
			Entries: []declcfg.ChannelEntry{{Name: csv.Name, SkipRange: SkipRange(o.Version)}},
		}},
		Bundles: []declcfg.Bundle{{
			Schema: declcfg.SchemaBundle, Name: csv.Name, Package: o.Package, Image: o.BundleImage,
			Properties: props,
			RelatedImages: []declcfg.RelatedImage{
				{Name: "bundle", Image: o.BundleImage},
				{Name: "manager", Image: o.Image},
			},
		}},
	}
	var buf bytes.Buffer
	if err := declcfg.WriteYAML(cfg, &buf); err != nil {
		return nil, err
	}
	return Files{CatalogPath: buf.Bytes()}, nil
}
