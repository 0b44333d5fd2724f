package wire

import (
	"fmt"
	"strings"
)

// MaxIDLen bounds node, model and region ids so subjects and KV keys stay short.
const MaxIDLen = 128

// ValidateID checks that id is NATS-token-safe: 1–128 characters of
// [A-Za-z0-9_-]. Dots are refused rather than mapped, so an id means one
// thing everywhere (subject token, KV key, log line). kind names the field in
// the error ("node_id", "model_id", "region").
func ValidateID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s %q is longer than %d characters", kind, id, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			return fmt.Errorf("%s %q has %q at %d: only letters, digits, '_' and '-' are allowed", kind, id, id[i], i)
		}
	}
	return nil
}

func idByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// Capabilities known to fedmesh; custom ones are "custom.<name>".
const (
	CapTranscribe = "transcribe"
	CapSynthesize = "synthesize"
	CapGenerate   = "generate"
	CapCode       = "code"
	CapEmbed      = "embed"
	CapImagegen   = "imagegen"
	CustomPrefix  = "custom."
)

// BuiltinCapabilities lists the non-custom capability tokens.
var BuiltinCapabilities = []string{CapTranscribe, CapSynthesize, CapGenerate, CapCode, CapEmbed, CapImagegen}

// ValidateCapability accepts a builtin capability or custom.<name> with a
// token-safe name.
func ValidateCapability(c string) error {
	for _, b := range BuiltinCapabilities {
		if c == b {
			return nil
		}
	}
	if name, ok := strings.CutPrefix(c, CustomPrefix); ok {
		if err := ValidateID("custom capability name", name); err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("unknown capability %q (want one of %s, or custom.<name>)", c, strings.Join(BuiltinCapabilities, ", "))
}
