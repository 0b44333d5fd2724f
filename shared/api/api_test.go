package api

import (
	"bytes"
	"encoding/json"
	"testing"
)

// HeldAnswer is the held StatusResponse as encoding/json writes it, so a
// client decoding it gets held: true.
func TestHeldAnswer(t *testing.T) {
	want, err := json.Marshal(StatusResponse{Held: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(HeldAnswer, want) {
		t.Errorf("HeldAnswer %s, want %s", HeldAnswer, want)
	}
}
