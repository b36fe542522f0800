// Package fspath holds the lexical path tests the agent's parts share: whether a path lies inside
// a folder. Callers clean (and, where symlinks matter, resolve) both paths first.
package fspath

import "strings"

// Within reports whether path is root or lies below it. Both must be clean absolute paths.
func Within(root, path string) bool {
	if root == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == root || strings.HasPrefix(path, root+"/")
}

// Below reports whether path lies strictly below root. Both must be clean absolute paths.
func Below(root, path string) bool {
	return path != root && Within(root, path)
}
