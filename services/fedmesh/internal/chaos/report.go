package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Targets of the issue for a full fault run.
const (
	TargetStrictSuccess = 99.9 // % of requests whose connection was not cut
	normalWindow        = 3 * time.Second
)

// outcome is one judged request reduced to what the report needs.
type outcome struct {
	start, end time.Time // sent; first final or the client's deadline
	verdict    Verdict
}

// summary is the first table.
type summary struct {
	Requests   int
	OK         int
	Silence    int
	Double     int
	Gaps       int
	Wrong      int
	After      int
	Cut        int
	ErrorCodes map[int]int
	// TakenOver: requests a node took over from a lost one (any class), and
	// how many of them were strict; LostFinals: Fed-Lost-Node 503s (also in
	// ErrorCodes); Superseded: replaced nodes' messages after they were
	// replaced (dropped by the client rules, not second answers).
	TakenOver, TakenOverOK int
	LostFinals             int
	Superseded             int
	// Replayed: messages recovered by a replay request (they filled a gap);
	// ReplayedReqs: requests with any, ReplayedOK: of them strict.
	Replayed, ReplayedReqs, ReplayedOK int
	// ResentReqs: requests sent again because nobody held them (§3.8),
	// ResentOK: of them strict.
	ResentReqs, ResentOK int
}

func summarize(outs []outcome) summary {
	s := summary{ErrorCodes: map[int]int{}}
	for _, o := range outs {
		s.Requests++
		switch o.verdict.Class {
		case ClassOK:
			s.OK++
		case ClassSilence:
			s.Silence++
		case ClassDouble:
			s.Double++
		case ClassGap:
			s.Gaps++
		case ClassWrong:
			s.Wrong++
		case ClassAfter:
			s.After++
		case ClassCut:
			s.Cut++
		case ClassError:
			s.ErrorCodes[o.verdict.Code]++
		}
		if o.verdict.TakenOver {
			s.TakenOver++
			if o.verdict.Class == ClassOK {
				s.TakenOverOK++
			}
		}
		if o.verdict.LostNode != "" {
			s.LostFinals++
		}
		s.Superseded += o.verdict.Superseded
		if o.verdict.Resent > 0 {
			s.ResentReqs++
			if o.verdict.Class == ClassOK {
				s.ResentOK++
			}
		}
		if o.verdict.Replayed > 0 {
			s.Replayed += o.verdict.Replayed
			s.ReplayedReqs++
			if o.verdict.Class == ClassOK {
				s.ReplayedOK++
			}
		}
	}
	return s
}

// replays is the sentence on gaps filled by replay requests; "" when none.
func (s summary) replays() string {
	if s.Replayed == 0 {
		return ""
	}
	return fmt.Sprintf("%d messages recovered by replay in %d requests (%d strict)", s.Replayed, s.ReplayedReqs, s.ReplayedOK)
}

// takeovers is the sentence on requests saved from lost nodes; "" when none.
func (s summary) takeovers() string {
	if s.TakenOver == 0 && s.LostFinals == 0 && s.Superseded == 0 {
		return ""
	}
	return fmt.Sprintf("%d taken over from a lost node (%d strict), %d ended by a Fed-Lost-Node 503, %d messages of replaced nodes dropped",
		s.TakenOver, s.TakenOverOK, s.LostFinals, s.Superseded)
}

// StrictPct is the share of strict successes among requests whose
// connection was not cut.
func (s summary) StrictPct() float64 {
	n := s.Requests - s.Cut
	if n == 0 {
		return 0
	}
	return 100 * float64(s.OK) / float64(n)
}

func (s summary) codes() string {
	if len(s.ErrorCodes) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(s.ErrorCodes)) {
		parts = append(parts, fmt.Sprintf("%d×%d", c, s.ErrorCodes[c]))
	}
	return strings.Join(parts, ", ")
}

// faultRun is one fault as it happened.
type faultRun struct {
	Name    string
	Target  string // what it hit
	At      time.Time
	Notes   []string // what the harness saw (restart exit codes, catalog return…)
	repeats map[string]int
	// set by analyze
	end      time.Time // next fault's start (or the end of the load)
	affected summary
	normal   time.Duration // -1: not within the phase
}

// note adds what the harness saw; a note seen before is counted, not repeated.
func (f *faultRun) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	if f.repeats == nil {
		f.repeats = map[string]int{}
	}
	f.repeats[n]++
	if c := f.repeats[n]; c > 1 {
		for i, old := range f.Notes {
			if old == n || strings.HasPrefix(old, n+" (×") {
				f.Notes[i] = fmt.Sprintf("%s (×%d)", n, c)
			}
		}
		return
	}
	f.Notes = append(f.Notes, n)
}

// analyze attributes every failed or taken-over request to a fault: the
// first one that happened while it was in flight, else the latest before it
// was sent (those before any fault are returned). It then finds each fault's time
// to normal: the later of the last affected request ending (its final, or
// its client's deadline) and the start of the first normalWindow, inside
// the fault's phase, in which requests were sent and every one of them was
// a strict success.
func analyze(faults []*faultRun, outs []outcome, loadEnd time.Time) (before summary) {
	var pre []outcome
	byFault := make([][]outcome, len(faults))
	for i, f := range faults {
		f.end = loadEnd
		if i+1 < len(faults) {
			f.end = faults[i+1].At
		}
	}
	for _, o := range outs {
		if o.verdict.Class == ClassOK && !o.verdict.TakenOver && o.verdict.Superseded == 0 && o.verdict.Replayed == 0 {
			continue
		}
		idx := -1
		for i, f := range faults {
			if !f.At.Before(o.start) && !f.At.After(o.end) {
				idx = i // in flight at this fault: the first one is the likely cause
				break
			}
		}
		if idx < 0 {
			for i, f := range faults {
				if !f.At.After(o.start) {
					idx = i
				}
			}
		}
		if idx < 0 {
			pre = append(pre, o)
			continue
		}
		byFault[idx] = append(byFault[idx], o)
	}
	for i, f := range faults {
		f.affected = summarize(byFault[i])
		var sent []outcome
		for _, o := range outs {
			if !o.start.Before(f.At) && o.start.Before(f.end) {
				sent = append(sent, o)
			}
		}
		f.normal = -1
		w := firstCleanWindow(f.At, f.end, sent)
		if w < 0 {
			continue
		}
		released := time.Duration(0)
		for _, o := range byFault[i] {
			released = max(released, o.end.Sub(f.At))
		}
		f.normal = max(w, released)
	}
	return summarize(pre)
}

// firstCleanWindow is the offset from start of the first window [t, t+3 s]
// inside [start, end) in which at least one request was sent and every
// request sent was a strict success; -1 when there is none.
func firstCleanWindow(start, end time.Time, sent []outcome) time.Duration {
	sorted := slices.Clone(sent)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].start.Before(sorted[j].start) })
	// Candidate window starts: the fault itself, then just after each failure.
	cands := []time.Time{start}
	for _, o := range sorted {
		if o.verdict.Class != ClassOK {
			cands = append(cands, o.start.Add(time.Nanosecond))
		}
	}
	for _, c := range cands {
		w := c.Add(normalWindow)
		if w.After(end) {
			break
		}
		clean, any := true, false
		for _, o := range sorted {
			if o.start.Before(c) || !o.start.Before(w) {
				continue
			}
			any = true
			if o.verdict.Class != ClassOK {
				clean = false
				break
			}
		}
		if clean && any {
			return c.Sub(start)
		}
	}
	return -1
}

// calm is the fault-free phase: the requests that ended before the first
// fault (or the bad input) started.
type calm struct {
	summary
	End time.Duration // the first fault's offset from the load's start
}

// calmPhase judges the load before the first of runs (all of it when
// there is none).
func calmPhase(t0 time.Time, runs []*faultRun, outs []outcome, loadEnd time.Time) calm {
	end := loadEnd
	if len(runs) > 0 {
		end = runs[0].At
	}
	var in []outcome
	for _, o := range outs {
		if o.end.Before(end) {
			in = append(in, o)
		}
	}
	return calm{summary: summarize(in), End: end.Sub(t0)}
}

// report is everything the tables show.
type report struct {
	Title    string
	Setup    string
	Total    summary
	Calm     calm // the fault-free phase
	Slots    int  // the nodes' slots (nodes × max_concurrency): spare capacity when above Clients
	Clients  int
	Faults   []*faultRun
	Before   summary // failures before the first fault
	T0       time.Time
	Inputs   []inputResult
	After    []string // the probe after the bad input
	AfterOK  bool
	Examples []string // a few failed requests, for the reader
	Notes    []string
}

func (r *report) targetsMet() (bool, []string) {
	var miss []string
	if p := r.Total.StrictPct(); p < TargetStrictSuccess {
		miss = append(miss, fmt.Sprintf("strict success %.2f %% < %.1f %%", p, TargetStrictSuccess))
	}
	// without faults: 100 % and no 503 while there is spare capacity
	switch c := r.Calm; {
	case c.Requests == 0:
		miss = append(miss, "no request ended in the fault-free phase")
	case c.OK < c.Requests-c.Cut:
		miss = append(miss, fmt.Sprintf("fault-free phase: %d of %d requests strict (%.2f %%, want 100 %%)", c.OK, c.Requests-c.Cut, c.StrictPct()))
	}
	if n := r.Calm.ErrorCodes[503]; n > 0 {
		miss = append(miss, fmt.Sprintf("fault-free phase: %d × 503 with %d slots for %d clients", n, r.Slots, r.Clients))
	}
	if r.Total.Silence > 0 {
		miss = append(miss, fmt.Sprintf("%d requests ended by the client's deadline", r.Total.Silence))
	}
	if r.Total.Double > 0 {
		miss = append(miss, fmt.Sprintf("%d requests with two finals", r.Total.Double))
	}
	if r.Total.Gaps > 0 {
		miss = append(miss, fmt.Sprintf("%d requests with gaps", r.Total.Gaps))
	}
	bad := 0
	for _, in := range r.Inputs {
		if !in.OK {
			bad++
		}
	}
	if bad > 0 {
		miss = append(miss, fmt.Sprintf("%d malformed inputs not answered as documented", bad))
	}
	if len(r.Inputs) > 0 && !r.AfterOK { // no inputs: --skip-input, nothing probed after
		miss = append(miss, "the mesh did not serve normally after the bad input")
	}
	return len(miss) == 0, miss
}

func (r *report) write(w io.Writer) {
	fmt.Fprintf(w, "## %s\n\n%s\n\n", r.Title, r.Setup)
	s := r.Total
	fmt.Fprintf(w, "| requests | strict success | lost (silence) | double finals | gaps | wrong content | after final | error finals by code | client connection cut |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| %d | %.2f %% (%d) | %d | %d | %d | %d | %d | %s | %d |\n\n",
		s.Requests, s.StrictPct(), s.OK, s.Silence, s.Double, s.Gaps, s.Wrong, s.After, s.codes(), s.Cut)
	if c := r.Calm; c.Requests > 0 || c.End > 0 {
		fmt.Fprintf(w, "Without faults (0.0 s to %s, the first fault; %d clients on %d slots): %d requests ended, %.2f %% strict (%d), error finals %s.\n\n",
			fmtDur(c.End), r.Clients, r.Slots, c.Requests, c.StrictPct(), c.OK, c.codes())
	}
	if t := s.takeovers(); t != "" {
		fmt.Fprintf(w, "Lost nodes: %s.\n\n", t)
	}
	if t := s.replays(); t != "" {
		fmt.Fprintf(w, "Gaps: %s.\n\n", t)
	}
	if s.ResentReqs > 0 {
		fmt.Fprintf(w, "Silent requests: %d sent again, nobody holding them (%d strict).\n\n", s.ResentReqs, s.ResentOK)
	}
	fmt.Fprintf(w, "| fault | at | target | requests affected | effect | time to normal |\n|---|---|---|---|---|---|\n")
	if r.Before.Requests > 0 {
		fmt.Fprintf(w, "| (before the first fault) | 0.0 s | | %d | %s | |\n", r.Before.Requests, effect(r.Before, nil))
	}
	for _, f := range r.Faults {
		a := f.affected
		ttn := "not within the phase (" + fmtDur(f.end.Sub(f.At)) + ")"
		if f.normal >= 0 {
			ttn = fmtDur(f.normal)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d | %s | %s |\n", cell(f.Name), fmtDur(f.At.Sub(r.T0)), cell(f.Target), a.Requests,
			effect(a, f.Notes), ttn)
	}
	fmt.Fprintln(w)
	if len(r.Inputs) > 0 {
		ok := 0
		var bad []inputResult
		for _, in := range r.Inputs {
			if in.OK {
				ok++
			} else {
				bad = append(bad, in)
			}
		}
		fmt.Fprintf(w, "Malformed inputs: %d sent, %d answered as documented.", len(r.Inputs), ok)
		if r.AfterOK {
			fmt.Fprintf(w, " Right after: the mesh serves normally (%s).\n\n", strings.Join(r.After, "; "))
		} else {
			fmt.Fprintf(w, " Right after: NOT normal (%s).\n\n", strings.Join(r.After, "; "))
		}
		if len(bad) > 0 {
			fmt.Fprintf(w, "| input | expected | got |\n|---|---|---|\n")
			for _, in := range bad {
				fmt.Fprintf(w, "| %s | %s | %s |\n", cell(in.Name), cell(in.Want), cell(in.Got))
			}
			fmt.Fprintln(w)
		}
	}
	if len(r.Examples) > 0 {
		fmt.Fprintf(w, "Examples of failed requests:\n\n")
		for _, e := range r.Examples {
			fmt.Fprintf(w, "- %s\n", e)
		}
		fmt.Fprintln(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "%s\n", n)
	}
}

// effect says what the failed requests of a phase were, and what the
// harness noticed.
func effect(a summary, notes []string) string {
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(a.Silence, "silent")
	add(a.Double, "two finals")
	add(a.Gaps, "gaps")
	add(a.Wrong, "wrong")
	add(a.After, "after final")
	for _, c := range slices.Sorted(maps.Keys(a.ErrorCodes)) {
		add(a.ErrorCodes[c], fmt.Sprintf("error %d", c))
	}
	add(a.Cut, "client cut")
	if len(parts) == 0 {
		parts = append(parts, "no failed request")
	}
	if a.TakenOver > 0 {
		parts = append(parts, fmt.Sprintf("%d taken over (%d strict)", a.TakenOver, a.TakenOverOK))
	}
	if a.LostFinals > 0 {
		parts = append(parts, fmt.Sprintf("%d Fed-Lost-Node 503", a.LostFinals))
	}
	if a.Replayed > 0 {
		parts = append(parts, fmt.Sprintf("%d recovered by replay (%d messages)", a.ReplayedReqs, a.Replayed))
	}
	out := strings.Join(parts, ", ")
	if len(notes) > 0 {
		out += "; " + strings.Join(notes, "; ")
	}
	return cell(out)
}

// cell escapes a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.1f s", d.Seconds())
}
