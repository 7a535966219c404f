package names

import (
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
)

// ApplicationName is the application_name of the relay's connections for instance id.
func ApplicationName(instanceID string) string { return AppNamePrefix + instanceID }

// ValidateInstanceID checks an instance id: 1 to MaxInstanceIDLen bytes of printable ASCII without
// spaces, so that application_name "pgoutbox-<id>" reaches the server unchanged.
func ValidateInstanceID(id string) error {
	if id == "" {
		return fmt.Errorf("instance id is empty")
	}
	if len(id) > MaxInstanceIDLen {
		return fmt.Errorf("instance id %q is %d bytes, the limit is %d (application_name %s<id> must fit %d bytes)",
			Truncate(id, 80), len(id), MaxInstanceIDLen, AppNamePrefix, MaxIdentifierLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("instance id %q must be printable ASCII without spaces (byte %d is %#x)", id, i, c)
		}
	}
	return nil
}

// DefaultInstanceID returns "<hostname>-<pid>", always valid: a host name that does not fit is cut
// and followed by a hash of the whole name (two long host names sharing a prefix stay distinct), and
// characters outside printable ASCII become '_'. The pid is always kept whole.
func DefaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	return InstanceID(host, os.Getpid())
}

// InstanceID is DefaultInstanceID for a given host name and pid.
func InstanceID(host string, pid int) string {
	if host == "" {
		host = "unknown"
	}
	b := []byte(host)
	for i, c := range b {
		if c < 0x21 || c > 0x7e {
			b[i] = '_'
		}
	}
	suffix := "-" + strconv.Itoa(pid)
	if len(b)+len(suffix) <= MaxInstanceIDLen {
		return string(b) + suffix
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(host))
	tag := fmt.Sprintf("-%08x", h.Sum32())
	keep := max(MaxInstanceIDLen-len(suffix)-len(tag), 0)
	return string(b[:min(keep, len(b))]) + tag + suffix
}
