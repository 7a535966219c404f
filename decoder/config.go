package decoder

import (
	"fmt"
	"os"
)

// DefaultMemoryLimit is the default [Config.MemoryLimit]: 64 MiB.
const DefaultMemoryLimit = 64 << 20

// Config holds the decoder's settings. The zero value is valid: protocol version 1
// semantics (no streaming), with the defaults below applying if streaming is turned on.
type Config struct {
	// Streaming enables protocol v2 streaming of in-progress transactions
	// (Stream Start/Stop/Commit/Abort). Default false: stream messages are an error.
	Streaming bool
	// MemoryLimit is the number of bytes of streamed, uncommitted messages kept in
	// memory across all open streamed transactions before the largest one is spilled
	// to disk. 0 means DefaultMemoryLimit (64 MiB).
	MemoryLimit int
	// SpillDir is where spill files are created. "" means os.TempDir(). Spill files
	// are removed on Stream Commit, Stream Abort, Reset and Close.
	SpillDir string
}

// Validate reports the first invalid setting, naming the field and its limit.
func (c Config) Validate() error {
	if c.MemoryLimit < 0 {
		return fmt.Errorf("decoder: Config.MemoryLimit must be >= 0 bytes (0 means %d), got %d",
			DefaultMemoryLimit, c.MemoryLimit)
	}
	return nil
}

// withDefaults returns c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	if c.MemoryLimit == 0 {
		c.MemoryLimit = DefaultMemoryLimit
	}
	if c.SpillDir == "" {
		c.SpillDir = os.TempDir()
	}
	return c
}

// checkSpillDir verifies that SpillDir is an existing directory.
func (c Config) checkSpillDir() error {
	fi, err := os.Stat(c.SpillDir)
	if err != nil {
		return fmt.Errorf("decoder: Config.SpillDir %q: %w", c.SpillDir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("decoder: Config.SpillDir %q is not a directory", c.SpillDir)
	}
	return nil
}
