package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's layout table names every top-level directory of the repository (but those .gitignore
// leaves out), so that a reader finds where everything is.
func TestReadmeLayoutListsEveryDirectory(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, layout, ok := strings.Cut(string(readme), "\n## Layout\n")
	if !ok {
		t.Fatal(`README.md has no "## Layout" section`)
	}
	if next := strings.Index(layout, "\n## "); next >= 0 {
		layout = layout[:next]
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	ignored := ignoredDirs(root)
	for _, e := range entries {
		if !e.IsDir() || e.Name() == ".git" || ignored[filepath.Join(root, e.Name())] {
			continue
		}
		if !strings.Contains(layout, "`"+e.Name()+"/") {
			t.Errorf("the README's layout table does not name the top-level directory %s/", e.Name())
		}
	}
}

var (
	// swallowRE is `eval "$(cmd)"`: eval of an empty output succeeds, so a failed cmd goes unnoticed.
	swallowRE = regexp.MustCompile(`eval\s+"\$\(`)
	// goRunBgRE is `go run … &`: the shell's job is the go command, and killing it leaves the program
	// (a daemon holding the slot) running.
	goRunBgRE = regexp.MustCompile(`\bgo run\b[^&|;#]*&\s*(#.*)?$`)
)

// shellProblems returns what is wrong with the commands in text (a shell script, or the shell blocks
// of a Markdown file): a failure eval swallows, or a backgrounded go run.
func shellProblems(text string, markdown bool) []string {
	var out []string
	inShell := !markdown
	for i, line := range strings.Split(text, "\n") {
		if markdown && fenceRE.MatchString(line) {
			lang := strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(line), "`~"))
			inShell = !inShell && (lang == "sh" || lang == "bash" || lang == "shell" || lang == "console")
			continue
		}
		if !inShell || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		switch {
		case swallowRE.MatchString(line):
			out = append(out, fmt.Sprintf("%d: %q: eval hides a failure of the command; assign first: out=$(cmd) && eval \"$out\"", i+1, line))
		case goRunBgRE.MatchString(line):
			out = append(out, fmt.Sprintf("%d: %q: killing a backgrounded go run leaves the program running; build it and run the binary", i+1, line))
		}
	}
	return out
}

// The commands the docs and CI run stop at the first failure and run the daemon from a binary.
func TestShellCommandsStopOnFailure(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	check := func(path string, markdown bool) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, path)
		for _, p := range shellProblems(string(b), markdown) {
			t.Errorf("%s:%s", rel, p)
		}
	}
	for _, f := range markdownFiles(t, root) {
		check(f, true)
	}
	check(filepath.Join(root, ".ci", "run"), false)

	// The checks themselves.
	bad := "```sh\neval \"$(make -s services-up)\" && make test\ngo run ./cmd/pgoutbox run --dev &   # daemon\n```\n"
	good := "```sh\nsvc=$(make -s services-up) && eval \"$svc\" && make test\nbin/pgoutbox run --dev &\n```\n" +
		"```go\neval \"$(x)\"\n```\n"
	if got := shellProblems(bad, true); len(got) != 2 {
		t.Errorf("shellProblems found %d problems in %q, want 2: %q", len(got), bad, got)
	}
	if got := shellProblems(good, true); len(got) != 0 {
		t.Errorf("shellProblems found problems in %q: %q", good, got)
	}
}
