package wire

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
)

// PublishJSON encodes v as JSON and publishes it on subj: the one way a
// service publishes an event or record. Errors name the subject.
func PublishJSON(nc *nats.Conn, subj string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message for %s: %w", subj, err)
	}
	if err := nc.Publish(subj, b); err != nil {
		return fmt.Errorf("publish on %s: %w", subj, err)
	}
	return nil
}
