package chaos

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Unix(1000, 0)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func ok(start, end float64) outcome {
	return outcome{start: at(start), end: at(end), verdict: Verdict{Class: ClassOK}}
}

func bad(start, end float64, c Class, code int) outcome {
	return outcome{start: at(start), end: at(end), verdict: Verdict{Class: c, Code: code}}
}

// steady is a request every 0.25 s from..to, each taking 0.5 s, all fine.
func steady(from, to float64) []outcome {
	var out []outcome
	for s := from; s < to; s += 0.25 {
		out = append(out, ok(s, s+0.5))
	}
	return out
}

func TestSummarize(t *testing.T) {
	s := summarize([]outcome{ok(0, 1), ok(0, 1), bad(0, 11, ClassSilence, 0), bad(0, 1, ClassError, 503),
		bad(0, 1, ClassError, 503), bad(0, 1, ClassError, 504), bad(0, 1, ClassDouble, 0), bad(0, 1, ClassGap, 0), bad(0, 1, ClassCut, 0)})
	assert.Equal(t, 9, s.Requests)
	assert.Equal(t, 2, s.OK)
	assert.Equal(t, 1, s.Silence)
	assert.Equal(t, 1, s.Double)
	assert.Equal(t, 1, s.Gaps)
	assert.Equal(t, 1, s.Cut)
	assert.Equal(t, map[int]int{503: 2, 504: 1}, s.ErrorCodes)
	assert.InDelta(t, 25.0, s.StrictPct(), 1e-9, "2 of the 8 not cut")
	assert.Equal(t, "503×2, 504×1", s.codes())
}

func TestAnalyze(t *testing.T) {
	cases := []struct {
		name     string
		outs     []outcome
		affected int     // requests attributed to the first fault (at 10 s)
		normal   float64 // its time to normal in seconds; -1 none
	}{
		{"no effect", steady(0, 40), 0, 0},
		{"errors right after the fault, then clean",
			append(steady(0, 40), bad(10, 10.1, ClassError, 503), bad(11, 11.1, ClassError, 503)), 2, 1.1},
		{"a silent request holds normal until its deadline",
			append(steady(0, 40), bad(9.5, 20.5, ClassSilence, 0)), 1, 10.5},
		{"failures all through the phase: never normal",
			append(steady(0, 40), bad(10, 10.1, ClassError, 503), bad(12, 12.1, ClassError, 503), bad(14, 14.1, ClassError, 503), bad(16, 16.1, ClassError, 503), bad(18, 18.1, ClassError, 503)), 5, -1},
		{"nothing sent: never normal", []outcome{ok(0, 1)}, 0, -1},
		{"a failure sent before the fault but in flight at it counts",
			append(steady(0, 40), bad(8, 10.5, ClassGap, 0)), 1, 0.5},
		{"a failure before every fault is not the fault's",
			append(steady(0, 40), bad(2, 3, ClassError, 500)), 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f1 := &faultRun{Name: "one", At: at(10)}
			f2 := &faultRun{Name: "two", At: at(20)}
			analyze([]*faultRun{f1, f2}, tc.outs, at(40))
			assert.Equal(t, tc.affected, f1.affected.Requests)
			if tc.normal < 0 {
				assert.Equal(t, time.Duration(-1), f1.normal)
			} else {
				assert.InDelta(t, tc.normal, f1.normal.Seconds(), 0.01)
			}
		})
	}
}

// A request in flight during two faults belongs to the first; failures
// before any fault are reported apart.
func TestAnalyzeAttribution(t *testing.T) {
	f1 := &faultRun{Name: "one", At: at(10)}
	f2 := &faultRun{Name: "two", At: at(12)}
	before := analyze([]*faultRun{f1, f2}, []outcome{bad(9, 20, ClassSilence, 0), bad(13, 13.5, ClassError, 503), bad(1, 2, ClassError, 500)}, at(30))
	assert.Equal(t, 1, f1.affected.Silence)
	assert.Equal(t, 1, f2.affected.ErrorCodes[503])
	assert.Equal(t, 1, before.ErrorCodes[500])
}

func TestReportWrite(t *testing.T) {
	outs := append(steady(0, 30), bad(10, 21, ClassSilence, 0), bad(10, 10.2, ClassDouble, 0), bad(11, 11.1, ClassError, 503))
	f := &faultRun{Name: "SIGKILL node agent mid-stream", Target: "node-2", At: at(10)}
	f.note("restarted node-2 exited with code 1")
	r := &report{Title: "t", Setup: "s", T0: t0, Total: summarize(outs)}
	r.Before = analyze([]*faultRun{f}, outs, at(30))
	r.Faults = []*faultRun{f}
	r.Calm, r.Slots, r.Clients = calmPhase(t0, r.Faults, outs, at(30)), 48, 24
	r.Inputs = []inputResult{{Name: "a", Want: "400", Got: "400", OK: true}, {Name: "b|c", Want: "413", Got: "503"}}
	r.After = []string{"fine"}
	var buf bytes.Buffer
	r.write(&buf)
	out := buf.String()
	assert.Contains(t, out, "| requests | strict success | lost (silence) | double finals | gaps |")
	assert.Contains(t, out, "| 123 | 97.56 % (120) | 1 | 1 | 0 | 0 | 0 | 503×1 | 0 |")
	// steady(0, 30) ends 38 requests before 10.0 s (the last sent at 9.25 s)
	assert.Contains(t, out, "Without faults (0.0 s to 10.0 s, the first fault; 24 clients on 48 slots): 38 requests ended, 100.00 % strict (38), error finals none.")
	assert.Contains(t, out, "| SIGKILL node agent mid-stream | 10.0 s | node-2 | 3 | 1 silent, 1 two finals, 1 error 503; restarted node-2 exited with code 1 | 11.0 s |")
	assert.Contains(t, out, "Malformed inputs: 2 sent, 1 answered as documented. Right after: NOT normal (fine).")
	assert.Contains(t, out, `| b\|c | 413 | 503 |`)
	met, miss := r.targetsMet()
	assert.False(t, met)
	require.NotEmpty(t, miss)
	assert.Contains(t, strings.Join(miss, ";"), "strict success 97.56 %")
}

func TestTargetsMet(t *testing.T) {
	fault := []*faultRun{{Name: "SIGKILL node agent mid-stream", At: at(10)}}
	cases := []struct {
		name string
		outs []outcome // the whole load, 0–30 s
		mut  func(r *report)
		miss string // "" all met
	}{
		{"all met", steady(0, 30), nil, ""},
		{"a silent request", steady(0, 30), func(r *report) { r.Total.Silence = 1 }, "client's deadline"},
		{"a 503 without faults", append(steady(0, 30), bad(5, 5.1, ClassError, 503)), nil, "fault-free phase: 1 × 503 with 48 slots for 24 clients"},
		{"a gap without faults", append(steady(0, 30), bad(5, 5.1, ClassGap, 0)), nil, "fault-free phase: 38 of 39 requests strict"},
		{"a 503 after the fault only", append(steady(0, 30), bad(12, 12.1, ClassError, 503)), func(r *report) { r.Total = summarize(steady(0, 30)) }, ""},
		{"no request before the first fault", steady(11, 30), nil, "no request ended in the fault-free phase"},
		{"not normal after the bad input", steady(0, 30), func(r *report) { r.Inputs, r.AfterOK = []inputResult{{OK: true}}, false }, "did not serve normally after the bad input"},
		{"no bad input sent (--skip-input)", steady(0, 30), func(r *report) { r.AfterOK = false }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &report{Total: summarize(tc.outs), AfterOK: true, Slots: 48, Clients: 24}
			r.Calm = calmPhase(t0, fault, tc.outs, at(30))
			if tc.mut != nil {
				tc.mut(r)
			}
			met, miss := r.targetsMet()
			if tc.miss == "" {
				assert.True(t, met, miss)
				return
			}
			assert.False(t, met)
			assert.Contains(t, strings.Join(miss, "; "), tc.miss)
		})
	}
}

func TestNoteCountsRepeats(t *testing.T) {
	f := &faultRun{}
	f.note("restarted %s exited with code %d", "node-2", 1)
	f.note("node-2 back")
	f.note("restarted %s exited with code %d", "node-2", 1)
	f.note("restarted %s exited with code %d", "node-2", 1)
	assert.Equal(t, []string{"restarted node-2 exited with code 1 (×3)", "node-2 back"}, f.Notes)
}

// Requests saved from a lost node belong to the fault that lost it: the
// table says how many were taken over and how many ended in the router's
// Fed-Lost-Node 503; a taken-over strict success is not a failure.
func TestReportTakeovers(t *testing.T) {
	saved := ok(10, 11)
	saved.verdict.TakenOver, saved.verdict.Superseded = true, 2
	lost := bad(10, 10.5, ClassError, 503)
	lost.verdict.LostNode = "node-2"
	brokenResume := bad(10, 10.4, ClassWrong, 0)
	brokenResume.verdict.TakenOver = true
	outs := append(steady(0, 30), saved, lost, brokenResume)
	f := &faultRun{Name: "SIGKILL node agent mid-stream", Target: "node-2", At: at(9.9)}
	r := &report{Title: "t", Setup: "s", T0: t0, Total: summarize(outs), AfterOK: true}
	r.Before = analyze([]*faultRun{f}, outs, at(30))
	r.Faults = []*faultRun{f}
	assert.Equal(t, 2, r.Total.TakenOver)
	assert.Equal(t, 1, r.Total.TakenOverOK)
	assert.Equal(t, 1, r.Total.LostFinals)
	assert.Equal(t, 2, r.Total.Superseded)
	assert.Equal(t, 3, f.affected.Requests, "the saved request is affected, not failed")
	var buf bytes.Buffer
	r.write(&buf)
	out := buf.String()
	assert.Contains(t, out, "Lost nodes: 2 taken over from a lost node (1 strict), 1 ended by a Fed-Lost-Node 503, 2 messages of replaced nodes dropped.")
	assert.Contains(t, out, "| SIGKILL node agent mid-stream | 9.9 s | node-2 | 3 | 1 wrong, 1 error 503, 2 taken over (1 strict), 1 Fed-Lost-Node 503 |")
	assert.Equal(t, 121+2, r.Total.OK+r.Total.Wrong+r.Total.ErrorCodes[503], "every request counted once")
}

// Gaps filled by a replay are counted on their own line and in the fault's
// effect; the requests are strict successes.
func TestReportReplays(t *testing.T) {
	saved := ok(10, 11)
	saved.verdict.Replayed = 2
	outs := append(steady(0, 30), saved)
	f := &faultRun{Name: "SIGKILL JetStream meta leader", Target: "n2", At: at(9.9)}
	r := &report{Title: "t", Setup: "s", T0: t0, Total: summarize(outs), AfterOK: true}
	r.Before = analyze([]*faultRun{f}, outs, at(30))
	r.Faults = []*faultRun{f}
	assert.Equal(t, 2, r.Total.Replayed)
	assert.Equal(t, 1, r.Total.ReplayedReqs)
	var buf bytes.Buffer
	r.write(&buf)
	out := buf.String()
	assert.Contains(t, out, "Gaps: 2 messages recovered by replay in 1 requests (1 strict).")
	assert.Contains(t, out, "no failed request, 1 recovered by replay (2 messages)")
}

// Requests sent again because nobody held them (§3.8) are counted on
// their own line; only requests that went out again count.
func TestReportResent(t *testing.T) {
	saved := ok(10, 11)
	saved.verdict.Resent = 1
	outs := append(steady(0, 30), saved)
	r := &report{Title: "t", Setup: "s", T0: t0, Total: summarize(outs), AfterOK: true}
	assert.Equal(t, 1, r.Total.ResentReqs)
	assert.Equal(t, 1, r.Total.ResentOK)
	var buf bytes.Buffer
	r.write(&buf)
	assert.Contains(t, buf.String(), "Silent requests: 1 sent again, nobody holding them (1 strict).")

	r = &report{Title: "t", Setup: "s", T0: t0, Total: summarize(steady(0, 30)), AfterOK: true}
	buf.Reset()
	r.write(&buf)
	assert.NotContains(t, buf.String(), "Silent requests")
}
