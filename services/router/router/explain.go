package router

import (
	"context"
	"encoding/json"
	"math"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// handleCandidates answers fed.router.candidates from its own goroutine:
// explaining 10,000 nodes takes a while and must not hold up the endpoint.
// The request carries an infer request's headers plus Fed-Capability (or the
// capability as its body).
func (s *Service) handleCandidates(req micro.Request) {
	m := &nats.Msg{Subject: req.Subject(), Reply: req.Reply(), Header: nats.Header(req.Headers()), Data: req.Data()}
	if m.Reply == "" {
		return
	}
	if !s.requests.Go(func(context.Context) { s.answerCandidates(m) }) {
		if err := wire.RespondError(s.nc, m.Reply, wire.Errorf(wire.CodeNoCapacity, "router stopping")); err != nil {
			s.log.Warn().Err(err).Msg("publish candidates refusal")
		}
	}
}

// answerCandidates explains m's request and answers with the candidates or
// the error.
func (s *Service) answerCandidates(m *nats.Msg) {
	var out *nats.Msg
	resp, err := s.explain(m)
	if err == nil {
		b, jerr := json.Marshal(resp)
		if jerr != nil {
			err = wire.Errorf(wire.CodeInternal, "encode candidates: %v", jerr)
		}
		out = &nats.Msg{Data: b}
	}
	if err != nil {
		out = wire.ErrorMsg(err)
	}
	out.Subject = m.Reply
	if perr := s.nc.PublishMsg(out); perr != nil {
		s.log.Warn().Err(perr).Msg("publish candidates answer")
	}
}

// explain judges every node serving the request's capability.
func (s *Service) explain(m *nats.Msg) (*api.CandidatesResponse, error) {
	capability := m.Header.Get(wire.HdrCapability)
	if capability == "" {
		capability = strings.TrimSpace(string(m.Data))
	}
	if capability == "" {
		return nil, wire.Errorf(wire.CodeBadRequest, "header %s: missing (or put the capability in the body)", wire.HdrCapability)
	}
	if err := wire.ValidateCapability(capability); err != nil {
		return nil, wire.Errorf(wire.CodeNotFound, "capability %q: %v", capability, err)
	}
	spec, err := wire.ParseSpec(m.Header)
	if err != nil {
		return nil, err
	}
	pol := s.policy.Load()
	r := newPlacementQuery(capability, &spec, s.cfg.Region)
	if m.Header.Get(wire.HdrCapability) != "" && textCapability(capability) {
		// the body is the prompt: show each node's prefix match for it
		r.blocks = blockHashes(nil, m.Data)
	}
	r.matches = s.prefix.match(r.blocks, r.matchBuf[:0])
	// what the strategy would pick now, without taking a round-robin ticket
	d := s.cache.decide(&r, pol, s.rr.Load()+1)
	resp := s.cache.explain(&r, pol, d.e)
	if pol.strategy == stratExpectedTTFT && d.e != nil {
		resp.Decisive = d.decidedBy
	}
	return resp, nil
}

// explain builds the candidates answer; chosen is the decision's pick.
func (c *cache) explain(r *placementQuery, pol *policyState, chosen *entry) *api.CandidatesResponse {
	resp := &api.CandidatesResponse{Capability: r.capability, Strategy: pol.Strategy, Candidates: []api.Candidate{}}
	var sc [numPolicies]float64
	var chosenScores, runnerScores [numPolicies]float64
	runnerTotal, haveRunner := 0.0, false

	c.rlockIndexed()
	defer c.mu.RUnlock()
	r.q.callerID = c.callerRegionLocked(r.q.callerRegion)
	for _, e := range c.candidatesLocked(r.capability, r.model) {
		total, rej := score(e, &r.q, &pol.w, &sc)
		if rej == rejNone && total < pol.MinScore {
			rej = rejMinScore
		}
		cand := api.Candidate{NodeID: e.id, Region: e.region, ModelID: e.modelFor(r.capability, r.model),
			Scores: make(map[string]float64, numPolicies), Total: round3(total), Eligible: rej == rejNone, Chosen: e == chosen}
		for i, name := range policyNames {
			cand.Scores[name] = round3(sc[i])
		}
		if rej != rejNone {
			cand.RejectedBy = rej.policy()
			cand.Reason = reason(e, &r.q, rej, total, pol.MinScore)
		} else {
			pr := predict(e, r, c.fleetTTFT(), r.prefixShare(e))
			cand.PredictedTTFTMs, cand.PrefixMatch = math.Round(pr.ms*10)/10, round3(pr.match)
		}
		switch {
		case e == chosen:
			chosenScores = sc
		case rej == rejNone && (!haveRunner || total > runnerTotal):
			runnerScores, runnerTotal, haveRunner = sc, total, true
		}
		resp.Candidates = append(resp.Candidates, cand)
	}
	if chosen != nil && haveRunner {
		resp.Decisive = decisive(&pol.w, &chosenScores, &runnerScores)
	}
	return resp
}

// decisive names the policy whose weighted score separates the chosen node
// from the runner-up the most in the chosen node's favour.
func decisive(w *weightVec, chosen, runner *[numPolicies]float64) string {
	best, bestGap := "", 0.0
	for i := range chosen {
		if gap := w[i] * (chosen[i] - runner[i]); gap > bestGap {
			best, bestGap = policyNames[i], gap
		}
	}
	return best
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}
