package record

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// HdrServerLoad is the dispatch ack header that carries the node's model
// server load (DESIGN §4): "r=<running>;w=<waiting>;kv=<0..1>;ph=<0..1>",
// so every router learns it with each ack, not only from heartbeats.
const HdrServerLoad = "Fed-Server-Load"

// MaxServerRequests bounds running and waiting in a server load.
const MaxServerRequests = 1 << 20

// Header is l in HdrServerLoad form.
func (l *ServerLoad) Header() string {
	return "r=" + strconv.Itoa(l.Running) + ";w=" + strconv.Itoa(l.Waiting) +
		";kv=" + strconv.FormatFloat(l.KVUsage, 'f', 3, 64) + ";ph=" + strconv.FormatFloat(l.PrefixHitRate, 'f', 3, 64)
}

// Validate checks a server load from a heartbeat or an ack.
func (l *ServerLoad) Validate() error {
	if l.Running < 0 || l.Running > MaxServerRequests || l.Waiting < 0 || l.Waiting > MaxServerRequests {
		return fmt.Errorf("server load: running %d / waiting %d out of [0, %d]", l.Running, l.Waiting, MaxServerRequests)
	}
	if err := inRange("server load kv_usage", l.KVUsage, 1); err != nil {
		return err
	}
	return inRange("server load prefix_hit_rate", l.PrefixHitRate, 1)
}

// ParseServerLoad decodes an HdrServerLoad value. Unknown keys are
// ignored (a newer node may send more); a bad or out-of-range value is an
// error naming it.
func ParseServerLoad(v string) (ServerLoad, error) {
	var l ServerLoad
	if len(v) > 256 {
		return l, fmt.Errorf("header %s: longer than 256 bytes", HdrServerLoad)
	}
	for v != "" {
		var item string
		item, v, _ = strings.Cut(v, ";")
		k, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return l, fmt.Errorf("header %s: %q is not key=value", HdrServerLoad, item)
		}
		var err error
		switch k {
		case "r":
			l.Running, err = strconv.Atoi(val)
		case "w":
			l.Waiting, err = strconv.Atoi(val)
		case "kv":
			l.KVUsage, err = strconv.ParseFloat(val, 64)
		case "ph":
			l.PrefixHitRate, err = strconv.ParseFloat(val, 64)
		}
		if err != nil {
			return l, fmt.Errorf("header %s: %s=%q is not a number", HdrServerLoad, k, val)
		}
	}
	if math.IsNaN(l.KVUsage) || math.IsNaN(l.PrefixHitRate) {
		return l, fmt.Errorf("header %s: NaN", HdrServerLoad)
	}
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("header %s: %w", HdrServerLoad, err)
	}
	return l, nil
}
