package omero

import "testing"

func TestShowURL(t *testing.T) {
	for _, tc := range []struct {
		name, webclient string
		items           []string
		want            string
	}{
		{"none", "", []string{"image-1"}, ""},
		{"slash", "https://omero.example.org/webclient/", []string{"dataset-3"}, "https://omero.example.org/webclient/?show=dataset-3"},
		{"no slash", "https://omero.example.org/webclient", []string{"plate-2"}, "https://omero.example.org/webclient/?show=plate-2"},
		{"several", "https://omero.example.org/webclient/", []string{"image-1", "image-2"}, "https://omero.example.org/webclient/?show=image-1%7Cimage-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ShowURL(tc.webclient, tc.items...); got != tc.want {
				t.Errorf("ShowURL(%q, %q) = %q, want %q", tc.webclient, tc.items, got, tc.want)
			}
		})
	}
}
