//go:build faults

package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// bin is the pgoutbox binary, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pgoutbox-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "pgoutbox")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=faults", "-o", bin, "../cmd/pgoutbox")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "faults: build pgoutbox:", err)
		return 1
	}
	start := time.Now()
	code := m.Run()
	if err := writeResults("../FAULTS.md", time.Since(start)); err != nil {
		fmt.Fprintln(os.Stderr, "faults: write FAULTS.md:", err)
	}
	return code
}
