package wire

import "fmt"

// Privacy is a data-privacy level. Levels are ordered
// public < internal < confidential < restricted (DESIGN §6).
type Privacy uint8

const (
	PrivacyPublic Privacy = iota
	PrivacyInternal
	PrivacyConfidential
	PrivacyRestricted
)

// DefaultPrivacy is a request's level, and a node's clearance, when none is given.
const DefaultPrivacy = PrivacyInternal

var privacyNames = [...]string{"public", "internal", "confidential", "restricted"}

func (p Privacy) String() string {
	if int(p) < len(privacyNames) {
		return privacyNames[p]
	}
	return fmt.Sprintf("privacy(%d)", uint8(p))
}

// ParsePrivacy reads a level name; "" gives DefaultPrivacy.
func ParsePrivacy(s string) (Privacy, error) {
	if s == "" {
		return DefaultPrivacy, nil
	}
	for i, n := range privacyNames {
		if n == s {
			return Privacy(i), nil
		}
	}
	return 0, fmt.Errorf("unknown privacy level %q (want public, internal, confidential or restricted)", s)
}

// Allows reports whether a node with clearance p may process data of level req.
func (p Privacy) Allows(req Privacy) bool { return p >= req }

// MarshalText writes the level's name, so JSON records carry "confidential".
func (p Privacy) MarshalText() ([]byte, error) {
	if int(p) >= len(privacyNames) {
		return nil, fmt.Errorf("invalid privacy level %d", uint8(p))
	}
	return []byte(privacyNames[p]), nil
}

// UnmarshalText reads a level's name.
func (p *Privacy) UnmarshalText(b []byte) error {
	v, err := ParsePrivacy(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}
