package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDesignNamesTestsThatExist: every test docs/design.md names as proof of a guarantee or failure
// mode is a test function in the repository, so the proof cannot silently disappear.
func TestDesignNamesTestsThatExist(t *testing.T) {
	root := repoRoot(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "design.md"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func (Test\w+)\(`)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		for _, m := range decl.FindAllSubmatch(src, -1) {
			defined[string(m[1])] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile(`\bTest[A-Z]\w*`).FindAllString(string(doc), -1)
	if len(named) == 0 {
		t.Fatal("docs/design.md names no tests")
	}
	for _, name := range named {
		if !defined[name] {
			t.Errorf("docs/design.md names %s, which no _test.go file defines", name)
		}
	}
}
