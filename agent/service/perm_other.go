//go:build !unix

package service

// readableWarning: ACLs govern access on Windows; nothing is checked.
func readableWarning(path, name string) string { return "" }
