package api

//lint:file-ignore ST1005 CheckLocalpart's errors are shown to users, worded as Synapse words them.

import (
	"errors"
	"regexp"
	"strings"
)

var localpartChars = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

// CheckLocalpart checks a requested localpart (already lower-cased) the way
// Synapse does: the spec's grammar, no leading underscore (reserved for
// bridges), no all-digit names (reserved for generated and guest IDs), and
// a full user ID of at most 255 bytes. The error text is meant for users.
func CheckLocalpart(localpart, serverName string) error {
	switch {
	case localpart == "":
		return errors.New("User ID cannot be empty")
	case !localpartChars.MatchString(localpart):
		return errors.New("User ID can only contain characters a-z, 0-9, or '=_-./+'")
	case strings.HasPrefix(localpart, "_"):
		return errors.New("User ID may not begin with _")
	case strings.Trim(localpart, "0123456789") == "":
		return errors.New("Numeric user IDs are reserved for guest users")
	case len("@"+localpart+":"+serverName) > 255:
		return errors.New("User ID is too long (255 bytes at most)")
	}
	return nil
}
