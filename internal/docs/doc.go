// Package docs holds the checks of the repository's documentation: every relative link in a Markdown
// file resolves (to a file, a directory, or a heading of a Markdown file); the README's layout table
// names every top-level directory; the shell commands of the docs and of CI stop at the first failure
// and run the daemon from a built binary. It has no code of its own: the checks are its tests.
package docs
