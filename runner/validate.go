package runner

import (
	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
)

// checked is an order that passed validation: its target parsed and its files resolved.
type checked struct {
	db.Order
	Target order.Target
	Files  []order.File
}

// validate checks an order row before anything runs, with the rules of package order (ParseRow),
// and that every file resolves inside the allowed roots, exists and is readable. It reads the
// files' metadata and never changes them. Its errors match order.ErrInvalid.
func validate(roots order.Roots, o db.Order) (checked, error) {
	d, err := order.ParseRow(order.Row{
		UUID: o.UUID, Group: o.Group, User: o.User,
		DestinationType: o.DestinationType, DestinationID: o.DestinationID,
		Files: o.Files, ImportOptions: o.ImportOptions,
		PreprocessingID: o.PreprocessingID, Preprocessing: o.Preprocessing,
	})
	if err != nil {
		return checked{Order: o}, err
	}
	c := checked{Order: o, Target: d.Target}
	c.Files, err = roots.Check(o.Group, d.Files)
	return c, err
}
