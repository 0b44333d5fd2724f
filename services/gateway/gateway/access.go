package gateway

import (
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Access-log keys the gateway adds to shared/logging's.
const (
	keyEndpoint = "endpoint"
	keyStatus   = "status" // HTTP status sent (499: the client went away, nothing sent)
	keyTokens   = "tokens" // output tokens the node reported
	keyTTFT     = "ttft"   // streams: request to first chunk; omitted otherwise
	keyCode     = "code"   // failures: the fedmesh error code
	keyError    = "error"  // failures: its whole description (the caller saw a generic text unless it was about its own request)
)

// done ends one authenticated request: its metrics and its one access-log
// line (message "request"). Every request past authed ends here exactly
// once; we is nil on success.
func (s *Service) done(o observation, requestID string, we *wire.Error) {
	s.metrics.observe(o)
	ev := s.log.Info()
	if we != nil && serverFault(we.Code) {
		ev = s.log.Warn() // a bug or a broken node, not a busy mesh or a bad request
	}
	ev.Str(logging.KeyRequest, requestID).Str(keyEndpoint, o.endpoint).Str(logging.KeyTenant, o.tenant).
		Str(logging.KeyModel, clip(o.model, wire.MaxIDLen)).Str(logging.KeyNode, o.node).Int(keyStatus, o.status).Int(keyTokens, o.tokens)
	if o.ttft > 0 {
		ev.Dur(keyTTFT, o.ttft)
	}
	ev.Dur(logging.KeyElapsed, o.elapsed)
	if we != nil {
		ev.Int(keyCode, we.Code).Str(keyError, clip(we.Description, maxLoggedLen))
	}
	ev.Msg("request")
}

// serverFault: 5xx other than the mesh's no capacity (503) and timeout (504),
// which a loaded but healthy mesh answers too.
func serverFault(code int) bool {
	return code >= 500 && code != wire.CodeNoCapacity && code != wire.CodeTimeout
}
