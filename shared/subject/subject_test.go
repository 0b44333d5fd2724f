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
		{Default.Held("r1"), "fed.held.r1"},
		{Default.HeldAll(), "fed.held.*"},
		{Default.Heartbeat("n1"), "fed.heartbeat.n1"},
		{Default.OutcomeAll(), "fed.outcome.*"},
		{Default.CatalogRegister(), "fed.catalog.register"},
		{Default.HealthList(), "fed.health.list"},
		{Default.Stats(), "fed.stats"},
		{Default.HealthStats(), "fed.health.stats"},
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

func TestInferParts(t *testing.T) {
	cases := []struct{ subj, capability, tenant string }{
		{"fed.infer.generate", "generate", ""},
		{"fed.infer.generate.acme", "generate", "acme"},
		{"fed.infer.custom.ocr", "custom.ocr", ""},
		{"fed.infer.custom.ocr.acme", "custom.ocr", "acme"},
		{"fed.infer.generate.a.b", "generate", "a.b"},
		{"fed.node.x.infer", "", ""},
	}
	for _, c := range cases {
		capability, tenant := Default.InferParts(c.subj)
		assert.Equal(t, c.capability, capability, c.subj)
		assert.Equal(t, c.tenant, tenant, c.subj)
	}
	assert.Equal(t, "fed.infer.generate.acme", Default.InferAs("generate", "acme"))
	assert.Equal(t, "fed.node.n1.infer.confidential", Default.NodeInferAt("n1", "confidential"))
}
