package main

import (
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/plugin/pkg/audit/buffered"
	"k8s.io/apiserver/plugin/pkg/audit/truncate"
)

const traceFormat = "audit-tune-trace/v1"

// Input is the audit-tune-trace/v1 document (docs/oracle-io.md).
type Input struct {
	Format    string                     `json:"format"`
	Seed      int64                      `json:"seed"`
	Backend   string                     `json:"backend"`
	Delegate  string                     `json:"delegate"`
	Flags     map[string]json.RawMessage `json:"flags"`
	Instances []InstanceIn               `json:"instances"`
	StopAt    *float64                   `json:"stop_at"`
	Webhook   WebhookBehaviour           `json:"webhook"`
	Log       LogBehaviour               `json:"log"`
	// TruncatePlacement: "outer" (default: truncate(buffered(delegate)), as options.ApplyTo builds it)
	// or "inner" (buffered(truncate(delegate)), a counterfactual used only to show what splitting would look like).
	TruncatePlacement string `json:"truncate_placement"`
	// Detail adds per-batch records and per-event latencies to the output.
	Detail bool `json:"detail"`
}

type InstanceIn struct {
	Name    string    `json:"name"`
	Offsets []float64 `json:"offsets"`
	Sizes   []int     `json:"sizes"`
}

type Outage struct {
	Start  float64 `json:"start"`
	End    float64 `json:"end"`
	Kind   string  `json:"kind"`
	Status int     `json:"status"`
	// RetryAfter, when set, is sent as a Retry-After header (whole seconds) on the status answers.
	RetryAfter *int `json:"retry_after"`
}

type WebhookBehaviour struct {
	LatencySeconds         float64 `json:"latency_seconds"`
	LatencyPerEventSeconds float64 `json:"latency_per_event_seconds"`
	// LatencySamples, when given, replaces LatencySeconds: each attempt draws one element uniformly
	// (a latency distribution given by its quantiles).
	LatencySamples []float64 `json:"latency_samples_seconds"`
	ErrorRate      float64   `json:"error_rate"`
	ErrorStatus    int       `json:"error_status"`
	Outages        []Outage  `json:"outages"`

	latMu  sync.Mutex
	latRng *mrand.Rand
}

// latency is the answer delay of one attempt carrying n events.
func (w *WebhookBehaviour) latency(n int) time.Duration {
	base := w.LatencySeconds
	if len(w.LatencySamples) > 0 {
		w.latMu.Lock()
		base = w.LatencySamples[w.latRng.IntN(len(w.LatencySamples))]
		w.latMu.Unlock()
	}
	return time.Duration((base + w.LatencyPerEventSeconds*float64(n)) * float64(time.Second))
}

type LogBehaviour struct {
	WriteSeconds         float64 `json:"write_seconds"`
	WritePerEventSeconds float64 `json:"write_per_event_seconds"`
	// Stalls are windows (seconds from start) in which the log write blocks: a call that starts
	// inside a stall returns no earlier than the stall's end (a disk stall; "kind" is ignored).
	Stalls []Outage `json:"stalls"`
}

// Settings are the effective kube-apiserver options for the chosen backend.
type Settings struct {
	Mode           string // batch | blocking | blocking-strict
	Batch          buffered.BatchConfig
	TruncateOn     bool
	Truncate       truncate.Config
	InitialBackoff time.Duration
	GroupVersion   string
}

// upstream defaults (k8s.io/apiserver/pkg/server/options/audit.go, v0.37.2)
var defaults = map[string]map[string]string{
	"webhook": {
		"mode": "batch", "batch-buffer-size": "10000", "batch-max-size": "400", "batch-max-wait": "30s",
		"batch-throttle-enable": "true", "batch-throttle-qps": "10", "batch-throttle-burst": "15",
		"truncate-enabled": "false", "truncate-max-batch-size": "10485760", "truncate-max-event-size": "102400",
		"initial-backoff": "10s", "version": "audit.k8s.io/v1",
	},
	"log": {
		"mode": "blocking", "batch-buffer-size": "10000", "batch-max-size": "1", "batch-max-wait": "0s",
		"batch-throttle-enable": "false", "batch-throttle-qps": "0", "batch-throttle-burst": "0",
		"truncate-enabled": "false", "truncate-max-batch-size": "10485760", "truncate-max-event-size": "102400",
		"version": "audit.k8s.io/v1",
	},
}

type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func bad(format string, a ...any) error { return &inputError{fmt.Sprintf(format, a...)} }

func (in *Input) flag(name string) (string, error) {
	key := "audit-" + in.Backend + "-" + name
	raw, ok := in.Flags[key]
	if !ok && name == "initial-backoff" {
		raw, ok = in.Flags["audit-webhook-batch-initial-backoff"] // deprecated alias
	}
	if !ok {
		return defaults[in.Backend][name], nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return strings.TrimSpace(s), nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", bad("flags.%s: not a string, number or bool", key)
	}
	switch t := v.(type) {
	case bool:
		return strconv.FormatBool(t), nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	}
	return "", bad("flags.%s: not a string, number or bool", key)
}

func (in *Input) intFlag(name string) (int64, error) {
	s, err := in.flag(name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, bad("flags.audit-%s-%s: %q is not an integer", in.Backend, name, s)
	}
	return v, nil
}

func (in *Input) durFlag(name string) (time.Duration, error) {
	s, err := in.flag(name)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, bad("flags.audit-%s-%s: %q is not a Go duration (e.g. 30s, 200ms)", in.Backend, name, s)
	}
	return d, nil
}

func (in *Input) boolFlag(name string) (bool, error) {
	s, err := in.flag(name)
	if err != nil {
		return false, err
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, bad("flags.audit-%s-%s: %q is not true/false", in.Backend, name, s)
	}
	return b, nil
}

// Validate checks the document and returns the effective settings.
func (in *Input) Validate() (*Settings, error) {
	if in.Format != traceFormat {
		return nil, bad("format: %q, expected %q", in.Format, traceFormat)
	}
	if in.Backend != "webhook" && in.Backend != "log" {
		return nil, bad("backend: %q, expected \"webhook\" or \"log\"", in.Backend)
	}
	switch in.Delegate {
	case "model":
	case "real-webhook":
		if in.Backend != "webhook" {
			return nil, bad("delegate \"real-webhook\" needs backend \"webhook\"")
		}
	default:
		return nil, bad("delegate: %q, expected \"model\" or \"real-webhook\"", in.Delegate)
	}
	if len(in.Instances) == 0 {
		return nil, bad("instances: empty; give at least one {name, offsets, sizes}")
	}
	last := 0.0
	names := map[string]bool{}
	for i, inst := range in.Instances {
		if inst.Name == "" {
			in.Instances[i].Name = fmt.Sprintf("apiserver-%d", i)
		}
		if names[in.Instances[i].Name] {
			return nil, bad("instances[%d].name: %q is used twice", i, inst.Name)
		}
		names[in.Instances[i].Name] = true
		if len(inst.Sizes) != 0 && len(inst.Sizes) != len(inst.Offsets) {
			return nil, bad("instances[%d]: %d offsets but %d sizes", i, len(inst.Offsets), len(inst.Sizes))
		}
		if !sort.Float64sAreSorted(inst.Offsets) {
			return nil, bad("instances[%d].offsets: not sorted", i)
		}
		if len(inst.Offsets) > 0 {
			if inst.Offsets[0] < 0 {
				return nil, bad("instances[%d].offsets: negative offset %v", i, inst.Offsets[0])
			}
			if l := inst.Offsets[len(inst.Offsets)-1]; l > last {
				last = l
			}
		}
		for j, s := range inst.Sizes {
			if s < 0 {
				return nil, bad("instances[%d].sizes[%d]: negative", i, j)
			}
		}
	}
	if in.StopAt == nil {
		in.StopAt = &last
	}
	if *in.StopAt < 0 {
		return nil, bad("stop_at: negative")
	}
	w := &in.Webhook
	if w.ErrorRate < 0 || w.ErrorRate > 1 {
		return nil, bad("webhook.error_rate: %v, expected 0..1", w.ErrorRate)
	}
	if w.ErrorStatus == 0 {
		w.ErrorStatus = 500
	}
	if w.ErrorStatus < 300 || w.ErrorStatus > 599 {
		return nil, bad("webhook.error_status: %d, expected a non-2xx status 300..599", w.ErrorStatus)
	}
	for i, x := range w.LatencySamples {
		if x < 0 {
			return nil, bad("webhook.latency_samples_seconds[%d]: negative", i)
		}
	}
	w.latRng = mrand.New(mrand.NewPCG(uint64(in.Seed), 0x1a7))
	if w.LatencySeconds < 0 || w.LatencyPerEventSeconds < 0 || in.Log.WriteSeconds < 0 || in.Log.WritePerEventSeconds < 0 {
		return nil, bad("latency/write seconds must be >= 0")
	}
	for i := range w.Outages {
		o := &w.Outages[i]
		if o.End < o.Start {
			return nil, bad("webhook.outages[%d]: end < start", i)
		}
		switch o.Kind {
		case "status":
			if o.Status == 0 {
				o.Status = 503
			}
			if o.Status < 300 || o.Status > 599 {
				return nil, bad("webhook.outages[%d].status: %d, expected 300..599", i, o.Status)
			}
		case "refuse", "hang":
		default:
			return nil, bad("webhook.outages[%d].kind: %q, expected status|refuse|hang", i, o.Kind)
		}
		if o.RetryAfter != nil && (o.Kind != "status" || *o.RetryAfter < 0) {
			return nil, bad("webhook.outages[%d].retry_after: needs kind status and >= 0", i)
		}
	}
	for i, o := range in.Log.Stalls {
		if o.End < o.Start {
			return nil, bad("log.stalls[%d]: end < start", i)
		}
	}
	switch in.TruncatePlacement {
	case "":
		in.TruncatePlacement = "outer"
	case "outer", "inner":
	default:
		return nil, bad("truncate_placement: %q, expected \"outer\" or \"inner\"", in.TruncatePlacement)
	}

	st := &Settings{}
	var err error
	if st.Mode, err = in.flag("mode"); err != nil {
		return nil, err
	}
	if st.Mode != "batch" && st.Mode != "blocking" && st.Mode != "blocking-strict" {
		return nil, bad("flags.audit-%s-mode: %q, expected batch|blocking|blocking-strict", in.Backend, st.Mode)
	}
	bs, err := in.intFlag("batch-buffer-size")
	if err != nil {
		return nil, err
	}
	ms, err := in.intFlag("batch-max-size")
	if err != nil {
		return nil, err
	}
	mw, err := in.durFlag("batch-max-wait")
	if err != nil {
		return nil, err
	}
	te, err := in.boolFlag("batch-throttle-enable")
	if err != nil {
		return nil, err
	}
	qs, err := in.flag("batch-throttle-qps")
	if err != nil {
		return nil, err
	}
	qps, err := strconv.ParseFloat(qs, 32)
	if err != nil {
		return nil, bad("flags.audit-%s-batch-throttle-qps: %q is not a number", in.Backend, qs)
	}
	burst, err := in.intFlag("batch-throttle-burst")
	if err != nil {
		return nil, err
	}
	st.Batch = buffered.BatchConfig{
		BufferSize: int(bs), MaxBatchSize: int(ms), MaxBatchWait: mw,
		ThrottleEnable: te, ThrottleQPS: float32(qps), ThrottleBurst: int(burst),
		AsyncDelegate: in.Backend == "webhook", // hard-wired in options/audit.go
	}
	if st.Mode == "batch" { // the same checks as validateBackendBatchOptions
		if bs <= 0 {
			return nil, bad("flags.audit-%s-batch-buffer-size: %d, must be > 0", in.Backend, bs)
		}
		if ms <= 0 {
			return nil, bad("flags.audit-%s-batch-max-size: %d, must be > 0", in.Backend, ms)
		}
		if te && (qps <= 0 || burst <= 0) {
			return nil, bad("flags.audit-%s-batch-throttle-qps/-burst: must be > 0 when throttling is enabled", in.Backend)
		}
	}
	if st.TruncateOn, err = in.boolFlag("truncate-enabled"); err != nil {
		return nil, err
	}
	if st.Truncate.MaxBatchSize, err = in.intFlag("truncate-max-batch-size"); err != nil {
		return nil, err
	}
	if st.Truncate.MaxEventSize, err = in.intFlag("truncate-max-event-size"); err != nil {
		return nil, err
	}
	if st.TruncateOn && (st.Truncate.MaxEventSize <= 0 || st.Truncate.MaxBatchSize < st.Truncate.MaxEventSize) {
		return nil, bad("flags.audit-%s-truncate-*: max-event-size must be > 0 and max-batch-size >= max-event-size", in.Backend)
	}
	if in.Backend == "webhook" {
		if st.InitialBackoff, err = in.durFlag("initial-backoff"); err != nil {
			return nil, err
		}
	}
	if st.GroupVersion, err = in.flag("version"); err != nil {
		return nil, err
	}
	if st.GroupVersion != "audit.k8s.io/v1" {
		return nil, bad("flags.audit-%s-version: %q, only audit.k8s.io/v1 is supported", in.Backend, st.GroupVersion)
	}
	return st, nil
}

// outageAt returns the outage covering t (seconds from start), if any.
func (w *WebhookBehaviour) outageAt(t float64) *Outage {
	for i := range w.Outages {
		if t >= w.Outages[i].Start && t < w.Outages[i].End {
			return &w.Outages[i]
		}
	}
	return nil
}
