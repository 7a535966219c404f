package docs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// repoRoot returns the directory holding go.mod, above the test's working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// markdownFiles returns the *.md files under root, .git and ignored directories left out.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	ignored := ignoredDirs(root)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == ".git" || d.Name() == "testdata" || ignored[path]) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".md") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// ignoredDirs returns the top-level directories .gitignore names as "/dir/" or "/dir".
func ignoredDirs(root string) map[string]bool {
	out := map[string]bool{}
	b, err := os.ReadFile(filepath.Join(root, ".gitignore"))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, "/"); ok && name != "" && !strings.ContainsAny(name, "*?[") {
			name = strings.TrimSuffix(name, "/")
			if !strings.Contains(name, "/") {
				out[filepath.Join(root, name)] = true
			}
		}
	}
	return out
}

var (
	fenceRE   = regexp.MustCompile("^\\s*(```|~~~)")
	codeRE    = regexp.MustCompile("`+[^`]*`+")
	inlineRE  = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	refDefRE  = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$`)
	headingRE = regexp.MustCompile(`^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	htmlIDRE  = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	schemeRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// prose returns the lines of a Markdown document outside fenced code blocks, with their numbers.
func prose(doc string) (lines []string, numbers []int) {
	inFence := false
	for i, line := range strings.Split(doc, "\n") {
		if fenceRE.MatchString(line) {
			inFence = !inFence
			continue
		}
		if !inFence {
			lines = append(lines, line)
			numbers = append(numbers, i+1)
		}
	}
	return lines, numbers
}

// anchors returns the anchors of doc's headings as GitHub renders them (lower case, punctuation
// dropped, spaces to hyphens, "-1", "-2" … for repeats), plus explicit <a name|id="…"> anchors.
func anchors(doc string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	lines, _ := prose(doc)
	for _, line := range lines {
		for _, m := range htmlIDRE.FindAllStringSubmatch(line, -1) {
			out[m[1]] = true
		}
		m := headingRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		slug := slugify(m[1])
		if n := seen[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

func slugify(heading string) string {
	heading = inlineRE.ReplaceAllStringFunc(heading, func(link string) string { // a link's text only
		return link[strings.Index(link, "[")+1 : strings.Index(link, "]")]
	})
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// brokenLinks returns a description of each relative link in the Markdown file path that does not
// resolve: a missing file or directory, or an anchor that no heading of the target produces.
func brokenLinks(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var broken []string
	lines, numbers := prose(string(b))
	for i, line := range lines {
		line = codeRE.ReplaceAllString(line, "")
		var targets []string
		for _, m := range inlineRE.FindAllStringSubmatch(line, -1) {
			targets = append(targets, m[1])
		}
		if m := refDefRE.FindStringSubmatch(line); m != nil {
			targets = append(targets, m[1])
		}
		for _, target := range targets {
			if why := checkLink(path, target); why != "" {
				broken = append(broken, fmt.Sprintf("%s:%d: %s: %s", path, numbers[i], target, why))
			}
		}
	}
	return broken, nil
}

// checkLink returns why target, a link in the Markdown file from, does not resolve, or "".
func checkLink(from, target string) string {
	if schemeRE.MatchString(target) || strings.HasPrefix(target, "//") {
		return "" // a URL: not checked here
	}
	file, fragment, _ := strings.Cut(target, "#")
	resolved := from
	if file != "" {
		if strings.HasPrefix(file, "/") {
			return "absolute path: use a path relative to the file"
		}
		resolved = filepath.Join(filepath.Dir(from), filepath.FromSlash(file))
		if _, err := os.Stat(resolved); err != nil {
			return "no such file or directory"
		}
	}
	if fragment == "" {
		return ""
	}
	if !strings.HasSuffix(resolved, ".md") {
		return "anchor into a file that is not Markdown"
	}
	doc, err := os.ReadFile(resolved)
	if err != nil {
		return err.Error()
	}
	if !anchors(string(doc))[fragment] {
		return fmt.Sprintf("no heading makes the anchor #%s", fragment)
	}
	return ""
}

// Every relative link in every Markdown file of the repository resolves: to a file or a directory,
// and an anchor to a heading of the Markdown file it points into.
func TestMarkdownLinksResolve(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	files := markdownFiles(t, root)
	if len(files) < 3 {
		t.Fatalf("found %d Markdown files under %s, expected README.md, docs/… and more", len(files), root)
	}
	for _, f := range files {
		broken, err := brokenLinks(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range broken {
			rel, _ := filepath.Rel(root, b)
			t.Errorf("broken link: %s", rel)
		}
	}
}

// The checker finds what it is for: a missing file, a missing anchor, an anchor into another file;
// and accepts headings with punctuation, repeated headings, directories, URLs and code.
func TestBrokenLinksAreFound(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("sub/other.md", "# Other\n\n## Routing: where a message goes\n\n## Notes\n\n## Notes\n")
	doc := write("doc.md", strings.Join([]string{
		"# Title",
		"[ok file](sub/other.md) [ok dir](sub/) [ok anchor](sub/other.md#routing-where-a-message-goes)",
		"[repeat](sub/other.md#notes-1) [self](#title) [url](https://example.com/x.md#nowhere)",
		"`[in code](missing.md)`",
		"```",
		"[in a fence](missing.md)",
		"```",
		"[missing file](nothing.md)",
		"[missing anchor](sub/other.md#routing)",
		"[missing self](#other)",
		"[ref]: sub/gone.md",
	}, "\n"))
	broken, err := brokenLinks(doc)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range broken {
		_, after, _ := strings.Cut(b, "doc.md:")
		got = append(got, after)
	}
	want := []string{
		"8: nothing.md: no such file or directory",
		"9: sub/other.md#routing: no heading makes the anchor #routing",
		"10: #other: no heading makes the anchor #other",
		"11: sub/gone.md: no such file or directory",
	}
	if !slices.Equal(got, want) {
		t.Errorf("broken links:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
