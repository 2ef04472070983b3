package sqlite

import (
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// Each write is durable (an fsync of the WAL per commit), so these measure
// the disk as much as the code. The parallel variants show group commit:
// their ns/op falls well below the serial one's.

func BenchmarkCreateJob(b *testing.B) {
	s, _ := openTest(b)
	ctx := testCtx(b)
	i := 0
	for b.Loop() {
		i++
		if err := s.CreateJob(ctx, newJob(fmt.Sprintf("j%d", i), "a1", base)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateJobParallel(b *testing.B) {
	s, _ := openTest(b)
	ctx := testCtx(b)
	var n atomic.Int64
	b.SetParallelism(16) // many submitters, as through the API
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.CreateJob(ctx, newJob(fmt.Sprintf("j%d", n.Add(1)), "a1", base)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/float64(s.groups.Load()), "writes/commit")
}

// seedRunning stores n running jobs in one transaction, outside the timer.
func seedRunning(b *testing.B, s *Store, n int) {
	b.Helper()
	err := s.write(testCtx(b), func(tx *sql.Tx) error {
		for i := range n {
			j := newJob(fmt.Sprintf("j%d", i), "a1", base)
			j.State = protocol.JobRunning
			args, err := jobRow(j)
			if err != nil {
				return err
			}
			if _, err := s.exec(tx, qInsertJob, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func finishing(id string) store.Job {
	j := newJob(id, "a1", base)
	j.State = protocol.JobSucceeded
	j.Attempt = 1
	j.FinishedAt = ptr(base.Add(time.Second))
	j.Output = &protocol.Output{Credentials: &protocol.CredentialsOutput{Backend: "aws", KeysFound: []string{"password"}, Fingerprint: "ab12"}}
	return j
}

func BenchmarkFinishJob(b *testing.B) {
	s, _ := openTest(b)
	ctx := testCtx(b)
	seedRunning(b, s, b.N)
	b.ResetTimer()
	for i := range b.N {
		ok, err := s.UpdateJob(ctx, finishing(fmt.Sprintf("j%d", i)), protocol.JobRunning)
		if err != nil || !ok {
			b.Fatalf("UpdateJob = %v, %v", ok, err)
		}
	}
}

func BenchmarkFinishJobParallel(b *testing.B) {
	s, _ := openTest(b)
	ctx := testCtx(b)
	seedRunning(b, s, b.N)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1) - 1
			ok, err := s.UpdateJob(ctx, finishing(fmt.Sprintf("j%d", i)), protocol.JobRunning)
			if err != nil || !ok {
				b.Errorf("UpdateJob = %v, %v", ok, err)
				return
			}
		}
	})
}

func BenchmarkGetJob(b *testing.B) {
	s, _ := openTest(b)
	ctx := testCtx(b)
	seedRunning(b, s, 1000)
	i := 0
	for b.Loop() {
		i++
		if _, err := s.GetJob(ctx, fmt.Sprintf("j%d", i%1000)); err != nil {
			b.Fatal(err)
		}
	}
}
