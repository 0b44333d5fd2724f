package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// inputKind is how a malformed input is sent and what answers it.
type inputKind int

const (
	kindInfer    inputKind = iota // a request on fed.infer.*: one final to the reply subject
	kindReq                       // a request to a micro endpoint: one reply
	kindPublish                   // an event: no answer; its effect is checked by later inputs
	kindDispatch                  // a dispatch straight to a node: the ack, and nothing on Fed-Reply-To when refused
)

// noAnswer is the want of an input nothing should answer.
const noAnswer = -1

// input is one malformed (or hostile) input and its documented answer.
type input struct {
	name    string
	kind    inputKind
	subject string
	header  map[string]string
	body    []byte
	want    []int  // acceptable codes: 0 = success (done / a reply without error), noAnswer
	doc     string // where the answer is documented
	count   int    // kindInfer: send this many at once (default 1), each judged
	check   func(data []byte) string
	after   bool // sent after the poison events, to see the endpoints survived them
}

// inputResult is what one input got.
type inputResult struct {
	Name, Want, Got string
	OK              bool
}

func long(n int) string { return strings.Repeat("x", n) }

// inputs builds the malformed inputs against node n1 (a node id of the mesh).
func (h *harness) inputs(n1 string) []input {
	sp := h.m.space
	gen := sp.Infer(capability)
	bad := func(name, hdr, val string, want int, doc string) input {
		return input{name: fmt.Sprintf("%s: %.40q", name, val), kind: kindInfer, subject: gen,
			header: map[string]string{hdr: val}, body: []byte("hello"), want: []int{want}, doc: doc}
	}
	in := []input{
		bad("Fed-Timeout-Ms", wire.HdrTimeoutMs, "abc", 400, "§3.1"),
		bad("Fed-Timeout-Ms", wire.HdrTimeoutMs, "0", 400, "§3.1"),
		bad("Fed-Timeout-Ms", wire.HdrTimeoutMs, "-1", 400, "§3.1"),
		bad("Fed-Timeout-Ms", wire.HdrTimeoutMs, "3600001", 400, "§3.1, §11"),
		bad("Fed-Timeout-Ms", wire.HdrTimeoutMs, "9223372036854775807", 400, "§11"),
		bad("Fed-Timeout-Ms", wire.HdrTimeoutMs, "288230376151711745", 400, "§11"),
		bad("Fed-Timeout-Ms", wire.HdrTimeoutMs, "99999999999999999999999", 400, "§11"),
		bad("Fed-Timeout-Ms", wire.HdrTimeoutMs, "1.5", 400, "§3.1"),
		bad("Fed-Cost-Tolerance", wire.HdrCostTolerance, "101", 400, "§3.1"),
		bad("Fed-Cost-Tolerance", wire.HdrCostTolerance, "-1", 400, "§3.1"),
		bad("Fed-Cost-Tolerance", wire.HdrCostTolerance, "high", 400, "§3.1"),
		bad("Fed-Privacy", wire.HdrPrivacy, "secret", 400, "§3.1"),
		bad("Fed-Regions", wire.HdrRegions, ", ,,", 400, "§3.1"),
		bad("Fed-Regions", wire.HdrRegions, "eu.west", 400, "§3.1"),
		bad("Fed-Model", wire.HdrModel, "bad.model", 400, "§2 ids"),
		bad("Fed-Model", wire.HdrModel, long(129), 400, "§2 ids"),
		bad("Fed-Model", wire.HdrModel, "no-such-model", 404, "§8"),
		bad("Fed-Region", wire.HdrRegion, "a b", 400, "§3.1"),
		bad("Fed-Max-Latency-Ms", wire.HdrMaxLatencyMs, "NaN", 400, "§3.1"),
		bad("Fed-Max-Latency-Ms", wire.HdrMaxLatencyMs, "-1", 400, "§3.1"),
		bad("Fed-Max-Latency-Ms", wire.HdrMaxLatencyMs, "1e309", 400, "§3.1"),
		bad("Fed-Max-Latency-Ms", wire.HdrMaxLatencyMs, "+Inf", 400, "§3.1"),
		bad("Fed-Min-Throughput", wire.HdrMinThroughput, "NaN", 400, "§3.1"),
		bad("Fed-Min-Throughput", wire.HdrMinThroughput, "-5", 400, "§3.1"),
		bad("Fed-Prefer-Gpu", wire.HdrPreferGPU, "maybe", 400, "§3.1"),
		bad("Fed-Stream", wire.HdrStream, "yes please", 400, "§3.1"),
		bad("Fed-Tenant", wire.HdrTenant, long(129), 400, "§3.1, §11"),
		bad("Fed-Tenant", wire.HdrTenant, long(64<<10), 400, "§3.1, §11"),
		bad("Fed-Session", wire.HdrSession, long(257), 400, "§3.1, §11"),
		bad("Fed-Request-Id", wire.HdrRequestID, long(257), 400, "§2 ids, §11"),
		bad("Fed-Privacy above every node", wire.HdrPrivacy, "restricted", 403, "§6.2, §8"),
		bad("Fed-Regions no node is in", wire.HdrRegions, "mars", 403, "§6.2, §8"),
		{name: "capability not a token: fed.infer.nosuch", kind: kindInfer, subject: sp.Infer("nosuch"), body: []byte("x"), want: []int{404}, doc: "§8"},
		{name: "custom capability with a bad name", kind: kindInfer, subject: sp.Infer("custom") + ".bad%name", body: []byte("x"), want: []int{404}, doc: "§2, §8"},
		{name: "custom capability no node serves", kind: kindInfer, subject: sp.Infer("custom") + ".nobody", body: []byte("x"), want: []int{503}, doc: "§8"},
		{name: "binary garbage body (opaque: served)", kind: kindInfer, subject: gen, body: []byte{0xff, 0xfe, 0, 1, 2, 0x80}, want: []int{0}, doc: "§3.5"},
		{name: "Fed-Timeout-Ms 1, whole: one final", kind: kindInfer, subject: gen, header: map[string]string{wire.HdrTimeoutMs: "1"}, body: []byte("quick"), want: []int{504, 0}, doc: "§8 (one final: issue 12)"},
		{name: "Fed-Timeout-Ms 1, stream: one final", kind: kindInfer, subject: gen, header: map[string]string{wire.HdrTimeoutMs: "1", wire.HdrStream: "true"}, body: []byte("quick"), want: []int{504, 0}, doc: "§8 (one final: issue 12)"},
		{name: "30 × Fed-Timeout-Ms 100 at once: one final each", kind: kindInfer, subject: gen, header: map[string]string{wire.HdrTimeoutMs: "100", wire.HdrStream: "true"}, body: []byte("hurry"), want: []int{504, 0, 429}, count: 30, doc: "issue 12: one final each (429 = router queue wait over); client-caused 504s never count against nodes"},
		{name: "request without a reply subject (dropped)", kind: kindPublish, subject: gen, body: []byte("nobody listens")},
	}
	// Bodies that fit the client's max_payload but not the router's dispatch.
	in = append(in, input{name: "6 bodies of max_payload - headers - 67 bytes", kind: kindInfer, subject: gen, body: nil, want: []int{413}, count: 6, doc: "issue 12 (router answers 413)"})

	// Dispatches straight to a node, bypassing the router.
	disp := func(name string, set map[string]string, want []int, doc string) input {
		return input{name: "dispatch to " + n1 + ": " + name, kind: kindDispatch, subject: sp.NodeInferAt(n1, wire.DefaultPrivacy.String()), header: set, body: []byte("direct"), want: want, doc: doc}
	}
	in = append(in,
		disp("no Fed-Request-Id", map[string]string{wire.HdrRequestID: ""}, []int{400}, "§3.2"),
		disp("Fed-Request-Id of 257 bytes", map[string]string{wire.HdrRequestID: long(257)}, []int{400}, "§3.2"),
		disp("empty Fed-Reply-To", map[string]string{wire.HdrReplyTo: ""}, []int{400}, "§3.2"),
		disp("Fed-Reply-To with a space", map[string]string{wire.HdrReplyTo: "a b"}, []int{400}, "§3.2"),
		disp("Fed-Reply-To with *", map[string]string{wire.HdrReplyTo: "x.*"}, []int{400}, "§3.2"),
		disp("Fed-Reply-To with >", map[string]string{wire.HdrReplyTo: "x.>"}, []int{400}, "§3.2"),
		disp("Fed-Deadline not a number", map[string]string{wire.HdrDeadline: "soon"}, []int{400}, "§3.2"),
		disp("Fed-Deadline negative", map[string]string{wire.HdrDeadline: "-5"}, []int{400}, "§3.2"),
		disp("Fed-Capability not a capability", map[string]string{wire.HdrCapability: "nosuch"}, []int{400}, "§3.2"),
		disp("Fed-Model not served here", map[string]string{wire.HdrModel: "no-such-model"}, []int{404}, "§4"),
		disp("Fed-Privacy above the clearance", map[string]string{wire.HdrPrivacy: "restricted"}, []int{403}, "§4, §6.2"),
		disp("bad Fed-Timeout-Ms", map[string]string{wire.HdrTimeoutMs: "abc"}, []int{400}, "§3.2"),
		disp("Fed-Ack-Deadline passed: never started", map[string]string{wire.HdrAckDeadline: strconv.FormatInt(time.Now().Add(-5*time.Second).UnixMilli(), 10)}, []int{noAnswer}, "Fed-Ack-Deadline (issue 12)"),
	)

	// Catalog, health and router endpoints.
	req := func(name, subj, body string, want int, doc string) input {
		return input{name: name, kind: kindReq, subject: subj, body: []byte(body), want: []int{want}, doc: doc}
	}
	node := func(mut string) string {
		return `{"node_id":"chaos-bad","region":"r1","max_concurrency":1,"models":[{"model_id":"m1","capabilities":["generate"]}]` + mut + `}`
	}
	in = append(in,
		req("register: not JSON", sp.CatalogRegister(), "not json", 400, "§10.1"),
		req("register: empty object", sp.CatalogRegister(), "{}", 400, "§10.1"),
		req("register: node_id with a dot", sp.CatalogRegister(), strings.Replace(node(""), "chaos-bad", "chaos.bad", 1), 400, "§5.1"),
		req("register: no models", sp.CatalogRegister(), `{"node_id":"chaos-bad","region":"r1","max_concurrency":1,"models":[]}`, 400, "§5.1"),
		req("register: cost 2", sp.CatalogRegister(), node(`,"cost":2`), 400, "§5.1, §11"),
		req("register: cost 1e999", sp.CatalogRegister(), node(`,"cost":1e999`), 400, "§5.1"),
		req("register: max_concurrency 0", sp.CatalogRegister(), strings.Replace(node(""), `"max_concurrency":1`, `"max_concurrency":0`, 1), 400, "§5.1, §11"),
		req("register: clearance cosmic", sp.CatalogRegister(), node(`,"clearance":"cosmic"`), 400, "§5.1"),
		req("register: capability chat", sp.CatalogRegister(), strings.Replace(node(""), `["generate"]`, `["chat"]`, 1), 400, "§5.1"),
		req("register: instance_id of 257 bytes", sp.CatalogRegister(), node(`,"instance_id":"`+long(257)+`"`), 400, "§11"),
		req("register: model_id twice", sp.CatalogRegister(), strings.Replace(node(""), `}]`, `},{"model_id":"m1","capabilities":["generate"]}]`, 1), 400, "§5.1"),
		req("register: a live node's id, other instance", sp.CatalogRegister(), strings.Replace(node(`,"instance_id":"impostor"`), "chaos-bad", n1, 1), 409, "§8, §10.1"),
		req("deregister: not JSON", sp.CatalogDeregister(), "garbage", 400, "§10.1"),
		req("deregister: unknown node", sp.CatalogDeregister(), `{"node_id":"ghost-node"}`, 404, "§10.1"),
		req("deregister: a live node, wrong instance", sp.CatalogDeregister(), `{"node_id":"`+n1+`","instance_id":"impostor"}`, 409, "§10.1"),
		req("find: bad capability", sp.CatalogFind(), `{"capability":"nosuch"}`, 400, "§10.1"),
		req("find: not JSON", sp.CatalogFind(), "garbage", 400, "§10.1"),
		req("get: unknown model", sp.CatalogGet(), `{"model_id":"no-such-model"}`, 404, "§10.1"),
		req("get: bad model id", sp.CatalogGet(), `{"model_id":"bad.id"}`, 400, "§10.1"),
		req("health.get: not JSON", sp.HealthGet(), "garbage", 400, "§10.2"),
		req("health.get: bad node id", sp.HealthGet(), `{"node_id":"bad.id"}`, 400, "§10.2"),
		req("health.get: unknown node", sp.HealthGet(), `{"node_id":"ghost-node"}`, 404, "§10.2"),
		req("candidates: no capability", sp.RouterCandidates(), "", 400, "§10.3"),
		req("candidates: not a capability", sp.RouterCandidates(), "nosuch", 404, "§10.3"),
		input{name: "candidates: bad header", kind: kindReq, subject: sp.RouterCandidates(), body: []byte(capability), header: map[string]string{wire.HdrTimeoutMs: "abc"}, want: []int{400}, doc: "§10.3"},
	)

	// Poison events: health must drop each (§9) and keep answering.
	now := time.Now().UTC().Format(time.RFC3339Nano)
	outcome := func(mut string) []byte {
		return []byte(`{"kind":"completed","node_id":"` + n1 + `","ok":true,"latency_ms":5,"ts":"` + now + `"` + mut + `}`)
	}
	hb := func(mut string) []byte {
		return []byte(`{"node_id":"` + n1 + `","ts":"` + now + `","in_flight":0,"queue_depth":0,"max_concurrency":8` + mut + `}`)
	}
	ev := func(name, subj string, body []byte) input {
		return input{name: name, kind: kindPublish, subject: subj, body: body}
	}
	in = append(in,
		ev("outcome latency_ms 1e308", sp.Outcome(n1), outcome(`,"latency_ms":1e308`)),
		ev("outcome ttft_ms 1e308", sp.Outcome(n1), outcome(`,"ttft_ms":1e308`)),
		ev("outcome latency_ms 1e999", sp.Outcome(n1), outcome(`,"latency_ms":1e999`)),
		ev("outcome not JSON", sp.Outcome(n1), []byte("garbage")),
		ev("outcome tokens -1", sp.Outcome(n1), outcome(`,"tokens":-1`)),
		ev("outcome code 5", sp.Outcome(n1), outcome(`,"ok":false,"code":5`)),
		ev("outcome unknown kind", sp.Outcome(n1), outcome(`,"kind":"exploded"`)),
		ev("outcome node_id of another node", sp.Outcome(n1), outcome(`,"node_id":"someone-else"`)),
		ev("outcome tenant of 129 bytes", sp.Outcome(n1), outcome(`,"tenant":"`+long(129)+`"`)),
		ev("outcome fault martian", sp.Outcome(n1), outcome(`,"ok":false,"code":500,"fault":"martian"`)),
		ev("outcome on a bad subject token", sp.Outcome("bad%id"), outcome("")),
		ev("heartbeat in_flight -5", sp.Heartbeat(n1), hb(`,"in_flight":-5`)),
		ev("heartbeat gpu_utilization 1e308", sp.Heartbeat(n1), hb(`,"gpu_utilization":1e308`)),
		ev("heartbeat throughput_tps -1", sp.Heartbeat(n1), hb(`,"throughput_tps":-1`)),
		ev("heartbeat max_concurrency -1", sp.Heartbeat(n1), hb(`,"max_concurrency":-1`)),
		ev("heartbeat not JSON", sp.Heartbeat(n1), []byte("{{{{")),
		ev("heartbeat node_id of another node", sp.Heartbeat(n1), hb(`,"node_id":"someone-else"`)),
		ev("heartbeat on a bad subject token", sp.Heartbeat("bad%id"), hb("")),
		ev("unplaced not JSON", sp.Unplaced(), []byte("garbage")),
		ev("unplaced attempts -1, code 1e308", sp.Unplaced(), []byte(`{"code":1e308,"attempts":-1,"ts":"`+now+`"}`)),
		ev("cancel of an unknown id, garbage payload", sp.Cancel("chaos-unknown-id"), []byte("garbage")),
		input{name: "cancel with Fed-Node of no node", kind: kindPublish, subject: sp.Cancel("chaos-unknown-id-2"), header: map[string]string{"Fed-Node": "ghost-node"}},
		// nobody holds these: nobody answers (§3.8)
		input{name: "held question of an unknown id, garbage payload", kind: kindReq, subject: sp.Held("chaos-unknown-id"), body: []byte("garbage"), want: []int{noAnswer}, doc: "§3.8"},
		input{name: "held question of a 200-byte id", kind: kindReq, subject: sp.Held(long(200)), want: []int{noAnswer}, doc: "§3.8"},
	)

	// After the poison: every read endpoint still answers.
	statsOK := func(data []byte) string {
		var st record.Stats
		if err := json.Unmarshal(data, &st); err != nil {
			return "bad JSON: " + err.Error()
		}
		if math.IsInf(st.AvgLatencyMs, 0) || math.IsInf(st.LatencyP99Ms, 0) || st.State == "" {
			return "not finite or no state"
		}
		return ""
	}
	in = append(in,
		input{name: "fed.stats after the poison", kind: kindReq, subject: sp.Stats(), want: []int{0}, doc: "§10.2, issue 12", check: statsOK},
		req("fed.health.list after the poison", sp.HealthList(), "", 0, "§10.2, issue 12"),
		req("fed.health.get "+n1+" after the poison", sp.HealthGet(), `{"node_id":"`+n1+`"}`, 0, "§10.2"),
		req("fed.catalog.list with a garbage body", sp.CatalogList(), "garbage", 0, "§10.1"),
		req("probe of "+n1+" with a garbage body", sp.NodeProbe(n1), "garbage", 0, "§9.4"),
	)
	for i := len(in) - 5; i < len(in); i++ {
		in[i].after = true
	}
	return in
}

// inputParallel bounds the requests and dispatches in flight at once.
const inputParallel = 16

// sendInputs judges every input's answer: first the requests and
// dispatches, concurrently; then the events, in order; then, after the
// events had a moment to land, the reads that must survive them.
func (h *harness) sendInputs(ins []input) []inputResult {
	res := make([]inputResult, len(ins))
	sem := make(chan struct{}, inputParallel)
	var wg sync.WaitGroup
	for i, in := range ins {
		if in.kind == kindPublish || in.after {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() { defer func() { <-sem }(); res[i] = h.judgeInput(in) })
	}
	wg.Wait()
	for i, in := range ins {
		if in.kind == kindPublish {
			res[i] = h.judgeInput(in)
		}
	}
	_ = h.nc.Flush()
	time.Sleep(time.Second)
	for i, in := range ins {
		if in.after {
			res[i] = h.judgeInput(in)
		}
	}
	return res
}

func (h *harness) judgeInput(in input) inputResult {
	got, ok := h.sendInput(in)
	var want []string
	for _, w := range in.want {
		want = append(want, codeName(w))
	}
	if in.kind == kindPublish {
		want = []string{"no answer"}
	}
	w := strings.Join(want, " or ")
	if in.doc != "" {
		w += " (" + in.doc + ")"
	}
	return inputResult{Name: in.name, Want: w, Got: got, OK: ok}
}

func codeName(c int) string {
	switch c {
	case 0:
		return "success"
	case noAnswer:
		return "no answer"
	}
	return strconv.Itoa(c)
}

func (h *harness) sendInput(in input) (string, bool) {
	switch in.kind {
	case kindPublish:
		m := nats.NewMsg(in.subject)
		m.Data = in.body
		for k, v := range in.header {
			m.Header.Set(k, v)
		}
		if err := h.nc.PublishMsg(m); err != nil {
			return "publish failed: " + err.Error(), false
		}
		return "no answer", true
	case kindReq:
		m := nats.NewMsg(in.subject)
		m.Data = in.body
		for k, v := range in.header {
			m.Header.Set(k, v)
		}
		wait := 2 * time.Second
		silent := slices.Contains(in.want, noAnswer)
		if silent { // nobody answering is the documented answer: a shorter wait
			wait = 500 * time.Millisecond
		}
		r, err := h.nc.RequestMsg(m, wait)
		if err != nil {
			return "no answer (" + err.Error() + ")", silent && errors.Is(err, nats.ErrTimeout)
		}
		code := 0
		if c := r.Header.Get(wire.HdrServiceErrorCode); c != "" {
			code, _ = strconv.Atoi(c)
		}
		if code == 0 && in.check != nil {
			if why := in.check(r.Data); why != "" {
				return "success but " + why, false
			}
		}
		return codeName(code), slices.Contains(in.want, code)
	case kindDispatch:
		return h.sendDispatch(in)
	}
	return h.sendInfers(in)
}

// sendInfers sends count requests at once and wants exactly one final each,
// with an accepted code.
func (h *harness) sendInfers(in input) (string, bool) {
	n := max(in.count, 1)
	var wg sync.WaitGroup
	got := make([]string, n)
	oks := make([]bool, n)
	for i := range n {
		wg.Go(func() { got[i], oks[i] = h.inferOnce(in, i) })
	}
	wg.Wait()
	if n == 1 {
		return got[0], oks[0]
	}
	tally := map[string]int{}
	all := true
	for i := range n {
		tally[got[i]]++
		all = all && oks[i]
	}
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range tally {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%d× %s", tally[k], k))
	}
	return strings.Join(parts, ", "), all
}

func (h *harness) inferOnce(in input, i int) (string, bool) {
	inbox := h.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := h.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return "subscribe: " + err.Error(), false
	}
	defer sub.Unsubscribe()
	m := nats.NewMsg(in.subject)
	m.Reply = inbox
	m.Data = in.body
	m.Header.Set(wire.HdrRequestID, fmt.Sprintf("chaos-bad-%d-%d", time.Now().UnixNano(), i))
	m.Header.Set(wire.HdrTimeoutMs, "3000")
	for k, v := range in.header {
		m.Header.Set(k, v)
	}
	if in.body == nil { // the oversize body: fits the client, not a dispatch
		m.Data = make([]byte, int(h.nc.MaxPayload())-headerLen(m.Header)-67)
	}
	if err := h.nc.PublishMsg(m); err != nil {
		return "publish failed: " + err.Error(), false
	}
	var finals []message
	wait := time.NewTimer(5 * time.Second)
	defer wait.Stop()
	var linger <-chan time.Time
	for {
		select {
		case raw := <-ch:
			msg := decodeMessage(raw, time.Now())
			if msg.final() {
				finals = append(finals, msg)
				if linger == nil {
					linger = time.After(300 * time.Millisecond)
				}
			}
			continue
		case <-wait.C:
		case <-linger:
		}
		break
	}
	switch len(finals) {
	case 0:
		return "no final", slices.Contains(in.want, noAnswer)
	case 1:
		code := 0
		if finals[0].status == wire.StatusError {
			code = finals[0].code
		}
		return codeName(code), slices.Contains(in.want, code)
	}
	var parts []string
	for _, f := range finals {
		parts = append(parts, fmt.Sprintf("%s/%s", nodeName(f.node), codeName(f.code)))
	}
	return fmt.Sprintf("%d finals (%s)", len(finals), strings.Join(parts, ", ")), false
}

// headerLen is the size of h as NATS sends it.
func headerLen(h nats.Header) int {
	n := len("NATS/1.0\r\n") + 2
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// sendDispatch sends a dispatch straight to a node: a valid one with some
// headers changed. It wants the ack's code, and nothing on Fed-Reply-To
// unless the dispatch was accepted.
func (h *harness) sendDispatch(in input) (string, bool) {
	replyTo := h.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := h.nc.ChanSubscribe(replyTo, ch)
	if err != nil {
		return "subscribe: " + err.Error(), false
	}
	defer sub.Unsubscribe()
	m := nats.NewMsg(in.subject)
	m.Data = in.body
	base := map[string]string{
		wire.HdrRequestID:  fmt.Sprintf("chaos-direct-%d", time.Now().UnixNano()),
		wire.HdrReplyTo:    replyTo,
		wire.HdrAttempt:    "1",
		wire.HdrDeadline:   strconv.FormatInt(time.Now().Add(3*time.Second).UnixMilli(), 10),
		wire.HdrCapability: capability,
		wire.HdrModel:      model,
	}
	for k, v := range in.header {
		base[k] = v
	}
	for k, v := range base {
		if v != "" {
			m.Header.Set(k, v)
		}
	}
	r, err := h.nc.RequestMsg(m, 1500*time.Millisecond)
	ack := noAnswer
	got := "no ack"
	if err == nil {
		ack = 0
		if c := r.Header.Get(wire.HdrServiceErrorCode); c != "" {
			ack, _ = strconv.Atoi(c)
		}
		got = "ack " + codeName(ack)
		if s := r.Header.Get(wire.HdrStatus); ack == 0 && s != "" {
			got = "ack " + s
		}
	}
	// Anything sent to Fed-Reply-To within a moment?
	finals := 0
	t := time.After(500 * time.Millisecond)
	for done := false; !done; {
		select {
		case raw := <-ch:
			if decodeMessage(raw, time.Now()).final() {
				finals++
			}
		case <-t:
			done = true
		}
	}
	if finals > 0 {
		got += fmt.Sprintf(", %d finals to Fed-Reply-To", finals)
	}
	ok := slices.Contains(in.want, ack) && (finals == 0 || ack == 0)
	return got, ok
}
