package preprocess

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// rawResult is one element of the container's JSON list, as reported (container paths).
type rawResult struct {
	Name      string          `json:"name"`
	FullPath  string          `json:"full_path"`
	AltPath   string          `json:"alt_path"`
	KeyValues json.RawMessage `json:"keyvalues"`
	kv        [][2]string
}

// parseResults decodes the results line: a non-empty JSON list of objects with a full_path each.
func parseResults(line string) ([]rawResult, error) {
	if !strings.HasPrefix(line, "[") {
		return nil, errors.New("is not a JSON list")
	}
	var raws []rawResult
	if err := json.Unmarshal([]byte(line), &raws); err != nil {
		return nil, fmt.Errorf("is not a JSON list of results: %w", err)
	}
	if len(raws) == 0 {
		return nil, errors.New("is an empty list: the container reported no results")
	}
	for i := range raws {
		if raws[i].FullPath == "" {
			return nil, fmt.Errorf("result %d has no full_path", i)
		}
		kv, err := flattenKeyValues(raws[i].KeyValues)
		if err != nil {
			return nil, fmt.Errorf("result %d keyvalues: %w", i, err)
		}
		raws[i].kv = kv
	}
	return raws, nil
}

// flattenKeyValues reads keyvalues given as a list of objects or as one object, keeping the order
// of keys as written. Non-string values are kept as their JSON text (null as "").
func flattenKeyValues(raw json.RawMessage) ([][2]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	switch raw[0] {
	case '{':
		return orderedObject(raw)
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, err
		}
		var kv [][2]string
		for i, it := range items {
			it = bytes.TrimSpace(it)
			if len(it) == 0 || it[0] != '{' {
				return nil, fmt.Errorf("item %d is not an object", i)
			}
			pairs, err := orderedObject(it)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			kv = append(kv, pairs...)
		}
		return kv, nil
	default:
		return nil, errors.New("want a list of objects or one object")
	}
}

// orderedObject returns an object's members in the order they are written.
func orderedObject(raw json.RawMessage) ([][2]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var kv [][2]string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		kv = append(kv, [2]string{key, valueText(v)})
	}
	return kv, nil
}

func valueText(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	if bytes.Equal(v, []byte("null")) {
		return ""
	}
	var b bytes.Buffer
	if json.Compact(&b, v) == nil {
		return b.String()
	}
	return string(v)
}
