package router

import "testing"

func benchDecide(b *testing.B, n int) {
	run := NewDecisionBench(n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
}

func BenchmarkDecide10(b *testing.B)    { benchDecide(b, 10) }
func BenchmarkDecide1000(b *testing.B)  { benchDecide(b, 1000) }
func BenchmarkDecide10000(b *testing.B) { benchDecide(b, 10000) }

func BenchmarkDecidePrefix1000(b *testing.B) {
	run := NewDecisionBenchPrefix(1000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
}
