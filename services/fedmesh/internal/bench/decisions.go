package bench

import (
	"fmt"
	"io"
	"testing"

	"github.com/fedmesh/fedmesh/services/router/router"
)

// decisions measures one full route decision (filter, six policies, the
// strategy) over in-memory catalogs of 10, 1,000 and 10,000 eligible nodes.
func decisions(w io.Writer) error {
	fmt.Fprintf(w, "### Route decision cost (router.NewDecisionBench, testing.Benchmark)\n\n")
	fmt.Fprintf(w, "| candidates | ns/op | µs/op | allocs/op | B/op | target |\n|---|---|---|---|---|---|\n")
	for _, n := range []int{10, 1000, 10000} {
		decide := router.NewDecisionBench(n)
		r := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				decide()
			}
		})
		if r.N == 0 {
			return fmt.Errorf("bench: decision benchmark at %d candidates did not run", n)
		}
		target := ""
		if n == 1000 {
			target = "≤ 20 µs, ≤ 2 allocs"
		}
		fmt.Fprintf(w, "| %d | %d | %.2f | %d | %d | %s |\n", n, r.NsPerOp(), float64(r.NsPerOp())/1e3, r.AllocsPerOp(), r.AllocedBytesPerOp(), target)
	}
	fmt.Fprintln(w)
	return nil
}
