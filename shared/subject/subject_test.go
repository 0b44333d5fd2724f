package subject

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSubjects(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Default.Infer("generate"), "fed.infer.generate"},
		{Default.InferAll(), "fed.infer.>"},
		{Default.NodeInfer("n1"), "fed.node.n1.infer"},
		{Default.NodeProbe("n1"), "fed.node.n1.probe"},
		{Default.Cancel("r1"), "fed.cancel.r1"},
		{Default.Heartbeat("n1"), "fed.heartbeat.n1"},
		{Default.OutcomeAll(), "fed.outcome.*"},
		{Default.CatalogRegister(), "fed.catalog.register"},
		{Default.HealthList(), "fed.health.list"},
		{Default.Stats(), "fed.stats"},
		{Default.RouterCandidates(), "fed.router.candidates"},
		{Space{}.Infer("embed"), "fed.infer.embed"},
		{Space{Prefix: "acme"}.Heartbeat("x"), "acme.heartbeat.x"},
	} {
		assert.Equal(t, c.want, c.got)
	}
	assert.Equal(t, "custom.ocr", Default.CapabilityOf("fed.infer.custom.ocr"))
	assert.Equal(t, "", Default.CapabilityOf("fed.node.x.infer"))
	assert.Equal(t, "abc", LastToken("_INBOX.x.abc"))
}
