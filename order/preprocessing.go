package order

import (
	"errors"
	"path"
	"regexp"
	"strings"
)

// Preprocessing is the container step of an order: a row of imports_preprocessing, the
// [rules.preprocessing] table of a watch rule, the --container flags of `orders create`.
type Preprocessing struct {
	ID              int64             `toml:"-" json:"-"` // row id; 0 before the row is written
	Container       string            `toml:"container" json:"container"`
	InputFile       string            `toml:"input_file" json:"input_file"`               // "{Files}" is replaced by the file as the container sees it
	OutputFolder    string            `toml:"output_folder" json:"output_folder"`         // container-side mount of the file's folder, e.g. /data
	AltOutputFolder string            `toml:"alt_output_folder" json:"alt_output_folder"` // container-side mount of the local temp folder; "" for none
	ExtraParams     map[string]string `toml:"extra_params" json:"extra_params"`           // given to the container as --KEY VALUE
	// ExtraParamsRaw is the extra_params column as stored ("" when NULL), kept for messages and
	// for rows whose column is not a JSON object of strings.
	ExtraParamsRaw string `toml:"-" json:"-"`
}

// DefaultInputFile is the input_file of the convention: the file itself.
const DefaultInputFile = "{Files}"

var paramRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// reservedParams are set by the convention; an extra parameter may not repeat them.
var reservedParams = map[string]bool{"inputfile": true, "outputfolder": true, "altoutputfolder": true}

// Check validates the step as the container convention needs it; errors are *FieldError naming
// preprocessing.KEY.
func (p *Preprocessing) Check() error {
	switch {
	case strings.TrimSpace(p.Container) == "":
		return invalid("preprocessing.container", "required: name the container image")
	case CheckImage(p.Container) != nil:
		return invalid("preprocessing.container", "%q: %v", p.Container, CheckImage(p.Container))
	case p.InputFile == "":
		return invalid("preprocessing.input_file", "required (usually %s)", DefaultInputFile)
	case p.OutputFolder == "":
		return invalid("preprocessing.output_folder", "required: the container-side folder of the file, e.g. /data")
	}
	if err := checkMount("preprocessing.output_folder", p.OutputFolder); err != nil {
		return err
	}
	if a, o := p.AltOutputFolder, p.OutputFolder; a != "" {
		if err := checkMount("preprocessing.alt_output_folder", a); err != nil {
			return err
		}
		if Within(o, a) || Within(a, o) {
			return invalid("preprocessing.alt_output_folder", "%q overlaps output_folder %q; give two separate folders", a, o)
		}
	}
	for k := range p.ExtraParams {
		if !paramRE.MatchString(k) || reservedParams[strings.ToLower(k)] {
			return invalid("preprocessing.extra_params", "bad parameter name %q: want letters, digits, '_', '.', '-', "+
				"not inputfile, outputfolder or altoutputfolder", k)
		}
	}
	return nil
}

// CheckImage checks the form of a container image name.
func CheckImage(image string) error {
	switch {
	case image == "":
		return errors.New("empty image name")
	case strings.HasPrefix(image, "-") || strings.ContainsAny(image, " \t\n\r"):
		return errors.New("not an image name")
	}
	return nil
}

// checkMount validates a container-side mount folder.
func checkMount(field, p string) error {
	if !path.IsAbs(p) {
		return invalid(field, "%q is not an absolute path", p)
	}
	if path.Clean(p) != p || p == "/" || strings.ContainsAny(p, ":,\n") {
		return invalid(field, "%q: want a clean container path below / without ':' or ','", p)
	}
	return nil
}

// Copy returns a deep copy of p (nil for nil).
func (p *Preprocessing) Copy() *Preprocessing {
	if p == nil {
		return nil
	}
	c := *p
	if p.ExtraParams != nil {
		c.ExtraParams = make(map[string]string, len(p.ExtraParams))
		for k, v := range p.ExtraParams {
			c.ExtraParams[k] = v
		}
	}
	return &c
}
