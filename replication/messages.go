package replication

import (
	"fmt"
	"strconv"
	"strings"
)

// minMessagesMajor is the first PostgreSQL major version whose pgoutput sends logical decoding messages.
const minMessagesMajor = 14

// checkMessagesSupported checks the server_version a connection reported ("15.18 (Debian ...)",
// "9.6.24", "17beta1") against Config.Messages' requirement.
func checkMessagesSupported(version string) error {
	v := strings.TrimSpace(version)
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(v)
	}
	major, err := strconv.Atoi(v[:end])
	if err != nil {
		return fmt.Errorf("%w: logical messages need PostgreSQL %d or later, and the server's version %q cannot be read",
			ErrUnsupportedServer, minMessagesMajor, version)
	}
	if major < minMessagesMajor {
		return fmt.Errorf("%w: logical messages (pgoutput's messages option) need PostgreSQL %d or later, the server is %s: "+
			"upgrade it, or turn logical messages off (daemon logical_messages: false; no outbox.WithLogicalMessages) "+
			"and write messages with the Table transport", ErrUnsupportedServer, minMessagesMajor, version)
	}
	return nil
}
