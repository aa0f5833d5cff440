package main

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	"k8s.io/apiserver/pkg/audit"
)

// clock holds the replay start; all recorded times are seconds from it.
type clock struct{ t0 time.Time }

func (c *clock) since(t time.Time) float64 { return t.Sub(c.t0).Seconds() }
func (c *clock) now() float64              { return c.since(time.Now()) }
func (c *clock) at(sec float64) time.Time  { return c.t0.Add(time.Duration(sec * float64(time.Second))) }

// ledger tracks every event by (instance, index): when ProcessEvents was called for it and when a
// receiver first answered 2xx for a batch holding it. Times are ns since t0, stored +1 so 0 = unset.
type ledger struct {
	created   [][]atomic.Int64
	delivered [][]atomic.Int64
	dupes     atomic.Int64
}

func newLedger(counts []int) *ledger {
	l := &ledger{}
	for _, n := range counts {
		l.created = append(l.created, make([]atomic.Int64, n))
		l.delivered = append(l.delivered, make([]atomic.Int64, n))
	}
	return l
}

func auditID(inst, idx int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", inst, idx) }

func parseAuditID(id string) (inst, idx int, ok bool) {
	var a, b int
	if n, err := fmt.Sscanf(id, "%08x-0000-4000-8000-%012x", &a, &b); err != nil || n != 2 {
		return 0, 0, false
	}
	return a, b, true
}

func (l *ledger) markCreated(inst, idx int, ns int64) { l.created[inst][idx].Store(ns + 1) }

// markDelivered records a 2xx answer for the events with these audit IDs; returns how many were new.
func (l *ledger) markDelivered(ids []string, ns int64) int {
	n := 0
	for _, id := range ids {
		inst, idx, ok := parseAuditID(id)
		if !ok || inst >= len(l.delivered) || idx >= len(l.delivered[inst]) {
			continue
		}
		if l.delivered[inst][idx].CompareAndSwap(0, ns+1) {
			n++
		} else {
			l.dupes.Add(1)
		}
	}
	return n
}

func eventIDs(evs []*auditinternal.Event) []string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = string(e.AuditID)
	}
	return ids
}

// BatchRecord is one delegate ProcessEvents call.
type BatchRecord struct {
	Instance string  `json:"instance"`
	Start    float64 `json:"start"`
	End      float64 `json:"end"`
	Size     int     `json:"size"`
	OK       bool    `json:"ok"`
}

// meter is a pass-through audit.Backend that counts what goes through one layer of the chain.
// It adds nothing to the behaviour of the layer it wraps.
type meter struct {
	next        audit.Backend
	clk         *clock
	instance    string
	events      atomic.Int64
	calls       atomic.Int64
	failed      atomic.Int64
	inflight    atomic.Int64
	maxInflight atomic.Int64
	record      bool
	mu          sync.Mutex
	batches     []BatchRecord
}

func (m *meter) ProcessEvents(evs ...*auditinternal.Event) bool {
	m.events.Add(int64(len(evs)))
	m.calls.Add(1)
	cur := m.inflight.Add(1)
	for {
		mx := m.maxInflight.Load()
		if cur <= mx || m.maxInflight.CompareAndSwap(mx, cur) {
			break
		}
	}
	idx := -1
	if m.record {
		m.mu.Lock()
		idx = len(m.batches)
		m.batches = append(m.batches, BatchRecord{Instance: m.instance, Start: m.clk.now(), Size: len(evs)})
		m.mu.Unlock()
	}
	ok := m.next.ProcessEvents(evs...)
	m.inflight.Add(-1)
	if !ok {
		m.failed.Add(int64(len(evs)))
	}
	if idx >= 0 {
		end := m.clk.now()
		m.mu.Lock()
		m.batches[idx].End = end
		m.batches[idx].OK = ok
		m.mu.Unlock()
	}
	return ok
}

func (m *meter) Run(stopCh <-chan struct{}) error { return m.next.Run(stopCh) }
func (m *meter) Shutdown()                        { m.next.Shutdown() }
func (m *meter) String() string                   { return m.next.String() }

// Latency summary, nearest-rank percentiles (numpy method="inverted_cdf").
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func nearestRank(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	k := int(math.Ceil(p*float64(n))) - 1
	if k < 0 {
		k = 0
	}
	if k >= n {
		k = n - 1
	}
	return sorted[k]
}

func summarize(xs []float64) Latency {
	if len(xs) == 0 {
		return Latency{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return Latency{
		P50: nearestRank(s, 0.50), P90: nearestRank(s, 0.90), P99: nearestRank(s, 0.99),
		Max: s[len(s)-1], Mean: sum / float64(len(s)),
	}
}
