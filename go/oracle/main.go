// Command audit-tune-oracle replays audit event arrivals into the REAL k8s.io/apiserver audit
// backends (buffered, webhook, truncate) and reports what happened as JSON.
// Contract: docs/oracle-io.md (audit-tune-trace/v1).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/apiserver/pkg/audit"
	utilwebhook "k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/apiserver/plugin/pkg/audit/buffered"
	"k8s.io/apiserver/plugin/pkg/audit/truncate"
	"k8s.io/apiserver/plugin/pkg/audit/webhook"
	"k8s.io/component-base/metrics/legacyregistry"
	_ "k8s.io/component-base/metrics/prometheus/restclient" // as kube-apiserver: rest_client_* metrics
	"k8s.io/klog/v2"
)

func main() {
	inPath := flag.String("in", "", "read the trace document from FILE instead of stdin")
	keepLogs := flag.Bool("log-stderr", false, "keep klog output on stderr (HandlePluginError logs every dropped event)")
	showVersion := flag.Bool("version", false, "print the pinned k8s.io/apiserver version and exit")
	flag.Parse()

	if *showVersion {
		b, _ := json.Marshal(versions())
		fmt.Println(string(b))
		return
	}
	if !*keepLogs {
		klog.SetLogger(logr.Discard())
		log.SetOutput(io.Discard)
	}
	var r io.Reader = os.Stdin
	if *inPath != "" {
		f, err := os.Open(*inPath)
		if err != nil {
			fail(1, "cannot open --in: %v", err)
		}
		defer f.Close()
		r = f
	}
	var in Input
	dec := json.NewDecoder(r)
	if err := dec.Decode(&in); err != nil {
		fail(1, "input is not a valid audit-tune-trace/v1 JSON document: %v", err)
	}
	st, err := in.Validate()
	if err != nil {
		fail(1, "%v", err)
	}
	out, err := run(&in, st)
	if err != nil {
		fail(1, "%v", err)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail(1, "write output: %v", err)
	}
}

func fail(code int, format string, a ...any) {
	msg := strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " ")
	fmt.Fprintf(os.Stderr, "audit-tune-oracle: error: %s\n", msg)
	os.Exit(code)
}

func versions() map[string]string {
	v := map[string]string{"go": runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/component-base", "k8s.io/apimachinery":
				v[d.Path] = d.Version
			}
		}
	}
	return v
}

// ---- events ----

type eventFactory struct {
	base  int
	mu    sync.Mutex
	pads  map[int]string
	codec kruntime.Encoder
}

const padKey = "audit-tune.io/pad"

func newEventFactory() (*eventFactory, error) {
	f := &eventFactory{pads: map[int]string{}, codec: audit.Codecs.LegacyCodec(auditv1.SchemeGroupVersion)}
	b, err := kruntime.Encode(f.codec, f.template(0, 0, "", time.Now()))
	if err != nil {
		return nil, fmt.Errorf("encode template event: %v", err)
	}
	f.base = len(b) + 1 // + the newline a JSON stream/log line carries
	return f, nil
}

// template is a representative Metadata-level ResponseComplete event (kubectl list pods).
func (f *eventFactory) template(inst, idx int, pad string, now time.Time) *auditinternal.Event {
	mt := metav1.NewMicroTime(now)
	return &auditinternal.Event{
		Level:      auditinternal.LevelMetadata,
		AuditID:    types.UID(auditID(inst, idx)),
		Stage:      auditinternal.StageResponseComplete,
		RequestURI: "/api/v1/namespaces/default/pods?limit=500",
		Verb:       "list",
		User: authnv1.UserInfo{Username: "kubernetes-admin",
			Groups: []string{"kubeadm:cluster-admins", "system:authenticated"}},
		SourceIPs:                []string{"172.18.0.1"},
		UserAgent:                "kubectl/v1.37.0 (linux/amd64) kubernetes/0000000",
		ObjectRef:                &auditinternal.ObjectReference{Resource: "pods", Namespace: "default", APIVersion: "v1"},
		ResponseStatus:           &metav1.Status{Code: 200},
		RequestReceivedTimestamp: mt,
		StageTimestamp:           mt,
		Annotations: map[string]string{
			"authorization.k8s.io/decision": "allow",
			padKey:                          pad,
		},
	}
}

func (f *eventFactory) make(inst, idx, size int, now time.Time) *auditinternal.Event {
	n := size - f.base
	if n < 0 {
		n = 0
	}
	f.mu.Lock()
	pad, ok := f.pads[n]
	if !ok {
		pad = strings.Repeat("x", n)
		f.pads[n] = pad
	}
	f.mu.Unlock()
	return f.template(inst, idx, pad, now)
}

// ---- chain ----

type gauge struct{ cur, max atomic.Int64 }

func (g *gauge) inc() {
	c := g.cur.Add(1)
	for {
		m := g.max.Load()
		if c <= m || g.max.CompareAndSwap(m, c) {
			return
		}
	}
}

// globalMeter wraps the final delegate's meter to also track concurrency across all instances.
type globalMeter struct {
	*meter
	g *gauge
}

func (gm *globalMeter) ProcessEvents(evs ...*auditinternal.Event) bool {
	gm.g.inc()
	defer gm.g.cur.Add(-1)
	return gm.meter.ProcessEvents(evs...)
}

type layer struct {
	kind string // "truncate" | "buffered"
	m    *meter
}

type instance struct {
	idx     int
	in      InstanceIn
	top     audit.Backend
	layers  []layer // outer -> inner, each meter in front of its layer
	del     *meter  // in front of the final delegate (webhook / model); records batches
	stopCh  chan struct{}
	sent    atomic.Int64
	stopped float64
	done    float64
}

func run(in *Input, st *Settings) (map[string]any, error) {
	counts := make([]int, len(in.Instances))
	for i, inst := range in.Instances {
		counts[i] = len(inst.Offsets)
	}
	clk := &clock{}
	led := newLedger(counts)
	fac, err := newEventFactory()
	if err != nil {
		return nil, err
	}
	gv := auditv1.SchemeGroupVersion

	var sk *sink
	var tmp string
	if in.Delegate == "real-webhook" {
		sk, err = newSink(&in.Webhook, clk, led, in.Seed)
		if err != nil {
			return nil, fmt.Errorf("start webhook sink on 127.0.0.1: %v", err)
		}
		sk.srv.ErrorLog = log.New(io.Discard, "", 0)
		sk.detail = in.Detail
		defer sk.close()
		tmp, err = os.MkdirTemp("", "audit-tune-oracle-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
	}
	modelAttempts := &atomic.Int64{}
	modelFailed := &atomic.Int64{}
	modelStatus := &sync.Map{}
	modelRng := mrand.New(mrand.NewPCG(uint64(in.Seed), 0x0dd))
	modelRngMu := &sync.Mutex{}
	g := &gauge{}

	insts := make([]*instance, len(in.Instances))
	for i, spec := range in.Instances {
		var delegate audit.Backend
		if in.Delegate == "real-webhook" {
			kc, err := sk.kubeconfig(tmp, i)
			if err != nil {
				return nil, fmt.Errorf("write webhook kubeconfig: %v", err)
			}
			delegate, err = webhook.NewBackend(kc, gv, utilwebhook.DefaultRetryBackoffWithInitialDelay(st.InitialBackoff), nil)
			if err != nil {
				return nil, fmt.Errorf("webhook.NewBackend: %v", err)
			}
		} else {
			delegate = &modelDelegate{backend: in.Backend, beh: &in.Webhook, logb: &in.Log, backoff: st.InitialBackoff,
				clk: clk, led: led, rngMu: modelRngMu, rng: modelRng, attempts: modelAttempts,
				byStatus: modelStatus, failed: modelFailed}
		}
		inst := &instance{idx: i, in: spec, stopCh: make(chan struct{})}
		inst.del = &meter{next: delegate, clk: clk, instance: spec.Name, record: true}
		var cur audit.Backend = &globalMeter{meter: inst.del, g: g}
		wrap := func(kind string, b audit.Backend) {
			m := &meter{next: b, clk: clk, instance: spec.Name}
			inst.layers = append([]layer{{kind, m}}, inst.layers...)
			cur = m
		}
		if st.TruncateOn && in.TruncatePlacement == "inner" {
			wrap("truncate", truncate.NewBackend(cur, st.Truncate, gv))
		}
		if st.Mode == "batch" {
			wrap("buffered", buffered.NewBackend(cur, st.Batch))
		}
		if st.TruncateOn && in.TruncatePlacement == "outer" {
			wrap("truncate", truncate.NewBackend(cur, st.Truncate, gv)) // as options.ApplyTo
		}
		inst.top = cur
		insts[i] = inst
	}

	// Stall probe: a goroutine that sleeps 2 ms at a time and records how late it wakes up. It
	// touches no audit code; a late wake-up means the machine (not the code under test) stalled
	// the process, so timings of that run carry that much extra noise.
	probeStop := make(chan struct{})
	probeDone := make(chan struct{})
	var stallMax time.Duration
	var stallCount int
	var stallTotal time.Duration
	go func() {
		defer close(probeDone)
		const tick = 2 * time.Millisecond
		for {
			select {
			case <-probeStop:
				return
			default:
			}
			t := time.Now()
			time.Sleep(tick)
			late := time.Since(t) - tick
			if late > stallMax {
				stallMax = late
			}
			if late > 10*time.Millisecond {
				stallCount++
				stallTotal += late
			}
		}
	}()

	// Run(stopCh) before any arrival, as genericapiserver does (AuditBackend.Run(drainedCh)).
	clk.t0 = time.Now()
	for _, inst := range insts {
		if err := inst.top.Run(inst.stopCh); err != nil {
			return nil, fmt.Errorf("backend Run: %v", err)
		}
	}
	runReturned := clk.now()
	if sk != nil {
		sk.scheduleOutages()
	}
	stopAt := *in.StopAt
	blocking := st.Mode != "batch"

	var all sync.WaitGroup
	for _, inst := range insts {
		all.Add(1)
		go func(inst *instance) {
			defer all.Done()
			drained := make(chan struct{}) // all arrivals with offset <= stop_at have returned
			var reqs sync.WaitGroup        // request goroutines (blocking modes)
			arrivalsDone := make(chan struct{})
			go func() {
				defer close(arrivalsDone)
				signalled := false
				for j, off := range inst.in.Offsets {
					if !signalled && off > stopAt {
						reqs.Wait()
						close(drained)
						signalled = true
					}
					if d := time.Until(clk.at(off)); d > 0 {
						time.Sleep(d)
					}
					size := 850
					if len(inst.in.Sizes) > 0 {
						size = inst.in.Sizes[j]
					}
					now := time.Now()
					ev := fac.make(inst.idx, j, size, now)
					led.markCreated(inst.idx, j, now.Sub(clk.t0).Nanoseconds())
					inst.sent.Add(1)
					if blocking { // each event in its own request goroutine, the call is inline there
						reqs.Add(1)
						go func() { defer reqs.Done(); inst.top.ProcessEvents(ev) }()
					} else {
						inst.top.ProcessEvents(ev)
					}
				}
				if !signalled {
					reqs.Wait()
					close(drained)
				}
				reqs.Wait()
			}()
			if d := time.Until(clk.at(stopAt)); d > 0 {
				time.Sleep(d)
			}
			<-drained
			inst.stopped = clk.now()
			close(inst.stopCh)
			inst.top.Shutdown() // waits for the collector and every in-flight delegate call
			<-arrivalsDone
			inst.done = clk.now()
		}(inst)
	}
	all.Wait()
	wall := clk.now()
	close(probeStop)
	<-probeDone

	// ---- metrics from the real legacy registry ----
	errs := map[string]float64{"buffered": 0, "webhook": 0, "log": 0, "truncate": 0}
	restCodes := map[string]float64{}
	mfs, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather legacy registry: %v", err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "apiserver_audit_error_total":
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "plugin" {
						errs[lp.GetValue()] += m.GetCounter().GetValue()
					}
				}
			}
		case "rest_client_requests_total":
			if sk == nil {
				continue
			}
			for _, m := range mf.GetMetric() {
				lab := map[string]string{}
				for _, lp := range m.GetLabel() {
					lab[lp.GetName()] = lp.GetValue()
				}
				if lab["host"] == sk.addr && lab["method"] == "POST" {
					restCodes[lab["code"]] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if in.Delegate == "model" && in.Backend == "webhook" {
		errs["webhook"] += float64(modelFailed.Load()) // the real webhook would count these itself
	}

	// ---- assemble ----
	var lat []float64
	var detailEvents []map[string]any
	delivered := 0
	perInstDelivered := make([]int, len(insts))
	perInstLat := make([][]float64, len(insts))
	for i := range insts {
		for j := range led.created[i] {
			c := led.created[i][j].Load()
			d := led.delivered[i][j].Load()
			var dv any
			if c > 0 && d > 0 {
				x := float64(d-c) / 1e9
				lat = append(lat, x)
				perInstLat[i] = append(perInstLat[i], x)
				delivered++
				perInstDelivered[i]++
				dv = float64(d-1) / 1e9
			}
			if in.Detail {
				var cv any
				if c > 0 {
					cv = float64(c-1) / 1e9
				}
				detailEvents = append(detailEvents, map[string]any{"instance": i, "index": j, "created": cv, "delivered": dv})
			}
		}
	}

	// replay fidelity: how late each ProcessEvents call was against its offset
	var lag []float64
	for i, inst := range insts {
		for j, off := range inst.in.Offsets {
			if c := led.created[i][j].Load(); c > 0 {
				lag = append(lag, float64(c-1)/1e9-off)
			}
		}
	}

	var allBatches []BatchRecord
	var instOut []map[string]any
	var eventsTotal int64
	derived := map[string]int64{"buffered": 0, "truncate": 0, "webhook": 0}
	for i, inst := range insts {
		inst.del.mu.Lock()
		recs := append([]BatchRecord(nil), inst.del.batches...)
		inst.del.mu.Unlock()
		sort.SliceStable(recs, func(a, b int) bool { return recs[a].Start < recs[b].Start })
		allBatches = append(allBatches, recs...)
		sizes := make([]int, len(recs))
		for k, r := range recs {
			sizes[k] = r.Size
		}
		ie := map[string]int64{"buffered": 0, "webhook": 0, "log": 0, "truncate": 0}
		for k, l := range inst.layers {
			next := inst.del.events.Load()
			if k+1 < len(inst.layers) {
				next = inst.layers[k+1].m.events.Load()
			}
			ie[l.kind] += l.m.events.Load() - next
		}
		if in.Backend == "webhook" {
			ie["webhook"] = inst.del.failed.Load()
		} else {
			ie["log"] = inst.del.failed.Load()
		}
		for k := range derived {
			derived[k] += ie[k]
		}
		sent := inst.sent.Load()
		eventsTotal += sent
		instOut = append(instOut, map[string]any{
			"name": inst.in.Name, "events_total": sent, "errors": ie, "delivered": perInstDelivered[i],
			"batches": len(recs), "batch_sizes": sizes, "max_inflight_batches": inst.del.maxInflight.Load(),
			"delivery_latency_seconds": summarize(perInstLat[i]),
			"stop_seconds":             inst.stopped, "shutdown_done_seconds": inst.done,
		})
	}
	sort.SliceStable(allBatches, func(a, b int) bool { return allBatches[a].Start < allBatches[b].Start })
	sizes := make([]int, len(allBatches))
	starts := make([]float64, len(allBatches))
	for k, b := range allBatches {
		sizes[k] = b.Size
		starts[k] = b.Start
	}

	var attempts float64
	byCode := map[string]float64{}
	if sk != nil {
		for c, v := range restCodes {
			attempts += v
			byCode[c] = v
		}
	} else {
		attempts = float64(modelAttempts.Load())
		modelStatus.Range(func(k, v any) bool {
			byCode[k.(string)] = float64(v.(*atomic.Int64).Load())
			return true
		})
	}

	checks := map[string]any{
		"errors_from_counter": map[string]float64{"buffered": errs["buffered"], "webhook": errs["webhook"], "truncate": errs["truncate"]},
		"errors_from_layers":  derived,
		"consistent": int64(errs["buffered"]) == derived["buffered"] && int64(errs["truncate"]) == derived["truncate"] &&
			(in.Backend != "webhook" || int64(errs["webhook"]) == derived["webhook"]),
		"duplicate_deliveries": led.dupes.Load(),
	}
	out := map[string]any{
		"engine":                   "oracle",
		"delegate":                 in.Delegate,
		"backend":                  in.Backend,
		"events_total":             eventsTotal,
		"errors":                   errs,
		"delivered":                delivered,
		"batches":                  len(allBatches),
		"batch_sizes":              sizes,
		"batch_dispatch_seconds":   starts,
		"delivery_latency_seconds": summarize(lat),
		"max_inflight_batches":     g.max.Load(),
		"attempts":                 attempts,
		"attempts_by_code":         byCode,
		"instances":                instOut,
		"run_returned_seconds":     runReturned,
		"arrival_lag_seconds":      summarize(lag),
		"stall_seconds": map[string]any{"max": stallMax.Seconds(), "over_10ms": stallCount,
			"total_over_10ms": stallTotal.Seconds()},
		"wall_seconds": wall,
		"checks":       checks,
		"effective": map[string]any{
			"mode": st.Mode, "buffer_size": st.Batch.BufferSize, "max_batch_size": st.Batch.MaxBatchSize,
			"max_batch_wait_seconds": st.Batch.MaxBatchWait.Seconds(), "throttle_enable": st.Batch.ThrottleEnable,
			"throttle_qps": st.Batch.ThrottleQPS, "throttle_burst": st.Batch.ThrottleBurst,
			"async_delegate": st.Batch.AsyncDelegate, "truncate_enabled": st.TruncateOn,
			"truncate_max_batch_size": st.Truncate.MaxBatchSize, "truncate_max_event_size": st.Truncate.MaxEventSize,
			"truncate_placement": in.TruncatePlacement, "initial_backoff_seconds": st.InitialBackoff.Seconds(),
			"event_base_bytes": fac.base,
		},
		"versions": versions(),
	}
	if sk != nil {
		recv := map[string]int64{}
		sk.byStatus.Range(func(k, v any) bool {
			recv[k.(string)] = v.(*atomic.Int64).Load()
			return true
		})
		out["receiver"] = map[string]any{
			"requests": sk.requests.Load(), "by_status": recv, "max_inflight_requests": sk.maxInflight.Load(),
			"addr": sk.addr,
		}
		sk.mu.Lock()
		if len(sk.serveErrs) > 0 {
			var msgs []string
			for _, e := range sk.serveErrs {
				msgs = append(msgs, e.Error())
			}
			out["receiver_errors"] = msgs
		}
		sk.mu.Unlock()
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out["cpu_seconds"] = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	if in.Detail {
		if sk != nil {
			sk.reqMu.Lock()
			out["requests_detail"] = append([]RequestRecord(nil), sk.reqLog...)
			sk.reqMu.Unlock()
		}
		out["batches_detail"] = allBatches
		out["events_detail"] = detailEvents
	}
	return out, nil
}
