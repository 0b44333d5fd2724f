package health

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/nats-io/nats.go/jetstream"
)

// Writing fed_health. Every write is revision-checked (Create for a missing
// key, Update with the last revision seen otherwise), so two instances never
// overwrite each other blindly. On a conflict the writer re-reads the key:
// when the stored value already says the same, or reflects a newer event
// than this instance has applied (updated_at), it skips; otherwise it
// retries with its current record and the new revision. Memory is never
// merged from the bucket after start: every instance sees every event, so
// adopting another's counters would count events twice.

// writeJob is one node's record to write.
type writeJob struct {
	id  string
	rec record.Health
	rev uint64
}

// maxWriteAttempts bounds the retries of one write after conflicts.
const maxWriteAttempts = 3

// kvTimeout bounds one write or delete of a key, with its re-reads.
const kvTimeout = 5 * time.Second

// flush writes every node whose bucket value lags: at once for urgent
// changes (state, circuit, draining), at most once per HeartbeatInterval
// for the rest. It waits for its writes, so one node never has two writes
// in flight.
func (s *Service) flush(ctx context.Context, now time.Time) {
	var jobs []writeJob
	s.mu.Lock()
	for id, n := range s.nodes {
		r := n.record()
		if n.kvSeen != nil && n.kvSeen.UpdatedAt.After(r.UpdatedAt) {
			continue // the bucket holds newer news from another instance
		}
		urgent := urgentChange(n.kvSeen, &r)
		routine := !urgent && !sameForRouting(n.kvSeen, &r) && now.Sub(n.lastWrite) >= s.cfg.HeartbeatInterval
		if urgent || routine {
			jobs = append(jobs, writeJob{id: id, rec: r, rev: n.kvRev})
		}
	}
	s.mu.Unlock()
	if len(jobs) == 0 {
		return
	}
	// A fork-join inside flush, which owns these goroutines: it returns only
	// after every write (so a node never has two in flight), also during the
	// final flush while the service's group is already stopping.
	var writes sync.WaitGroup
	sem := make(chan struct{}, s.cfg.WriteConcurrency)
	for _, j := range jobs {
		sem <- struct{}{}
		writes.Go(func() {
			defer func() { <-sem }()
			s.write(ctx, j)
		})
	}
	writes.Wait()
}

func (s *Service) write(ctx context.Context, j writeJob) {
	key := buckets.NodeKey(j.id)
	wctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	for range maxWriteAttempts {
		data, err := json.Marshal(&j.rec)
		if err != nil {
			s.log.Error().Err(err).Str(logging.KeyNode, j.id).Msg("encode health record")
			return
		}
		var newRev uint64
		if j.rev == 0 {
			newRev, err = s.health.Create(wctx, key, data)
		} else {
			newRev, err = s.health.Update(wctx, key, data, j.rev)
		}
		if err == nil {
			s.wrote(j, newRev)
			return
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			s.log.Warn().Err(err).Str(logging.KeyNode, j.id).Msg("write fed_health failed; retrying next flush")
			return
		}
		// Another instance wrote first.
		theirs, theirRev, gerr := s.read(wctx, key)
		if gerr != nil {
			s.log.Warn().Err(gerr).Str(logging.KeyNode, j.id).Msg("re-read fed_health after conflict")
			return
		}
		next, retry := s.reconcile(j.id, theirs, theirRev)
		if !retry {
			return
		}
		j = next
	}
	s.log.Warn().Str(logging.KeyNode, j.id).Int("attempts", maxWriteAttempts).Msg("fed_health write kept conflicting; retrying next flush")
}

// read returns the stored record of key and its revision; (nil, 0) when the
// key is missing or deleted.
func (s *Service) read(ctx context.Context, key string) (*record.Health, uint64, error) {
	e, err := s.health.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	r, err := record.DecodeHealth(key, e.Value())
	if err != nil {
		// Undecodable: ours replaces it.
		return nil, e.Revision(), nil
	}
	return &r, e.Revision(), nil
}

// wrote records a successful write.
func (s *Service) wrote(j writeJob, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[j.id]
	if n == nil {
		return
	}
	n.kvRev = rev
	rec := j.rec
	n.kvSeen = &rec
	n.lastWrite = time.Now()
}

// reconcile records what another instance wrote and decides whether to
// write over it: not when it already agrees with this instance's current
// record, nor when it reflects a newer event than this instance applied.
// Otherwise it returns the current record to retry with.
func (s *Service) reconcile(id string, theirs *record.Health, rev uint64) (writeJob, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil {
		return writeJob{}, false
	}
	n.kvRev, n.kvSeen = rev, theirs
	mine := n.record()
	if theirs != nil {
		if sameForRouting(theirs, &mine) {
			n.lastWrite = time.Now()
			return writeJob{}, false
		}
		if theirs.UpdatedAt.After(mine.UpdatedAt) {
			return writeJob{}, false
		}
	}
	return writeJob{id: id, rec: mine, rev: rev}, true
}

// forget deletes a forgotten node's key, unless another instance wrote it
// since (then that instance still hears from the node and owns its fate).
func (s *Service) forget(ctx context.Context, f forgetJob) {
	key := buckets.NodeKey(f.id)
	dctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	rev := f.rev
	if rev == 0 {
		_, r, err := s.read(dctx, key)
		if err != nil || r == 0 {
			return
		}
		rev = r
	}
	err := s.health.Delete(dctx, key, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		s.log.Warn().Err(err).Str(logging.KeyNode, f.id).Msg("delete fed_health key")
	}
}
