package omero

import (
	"net/url"
	"strings"
)

// ShowURL is the address on OMERO.web's webclient (its base URL, e.g.
// "https://omero.example.org/webclient/") that shows items, each "kind-id" ("image-1",
// "plate-2", "dataset-3"; ome/omero-web webclient/show.py joins several with '|'). The webclient
// switches to the objects' group. It is "" without a webclient. Mails and web pages link through
// it, so both point to the same place.
func ShowURL(webclient string, items ...string) string {
	if webclient == "" {
		return ""
	}
	return strings.TrimRight(webclient, "/") + "/?show=" + url.QueryEscape(strings.Join(items, "|"))
}
