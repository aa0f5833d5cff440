package main

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	utilwebhook "k8s.io/apiserver/pkg/util/webhook"
)

// modelDelegate stands in for the delegate of the buffered backend without any network.
//
//   - backend "log": each call sleeps write_seconds + write_per_event_seconds x n and succeeds.
//   - backend "webhook": each attempt is modelled (latency sleep; error_rate / outage => failure;
//     "hang" sleeps the 30 s client timeout, "refuse" fails at once), and attempts are driven by the
//     REAL retry loop k8s.io/apiserver/pkg/util/webhook.WithExponentialBackoff with
//     DefaultRetryBackoffWithInitialDelay(initial-backoff), retrying on any error as the audit
//     webhook does. A final failure returns false; the caller counts it under errors.webhook
//     (the real webhook backend would call audit.HandlePluginError("webhook", ...)).
type modelDelegate struct {
	backend  string
	beh      *WebhookBehaviour
	logb     *LogBehaviour
	backoff  time.Duration
	clk      *clock
	led      *ledger
	rngMu    *sync.Mutex
	rng      *mrand.Rand
	attempts *atomic.Int64
	byStatus *sync.Map
	failed   *atomic.Int64
}

const clientTimeout = 30 * time.Second // k8s.io/apiserver/pkg/util/webhook defaultRequestTimeout

var errModel = errors.New("modelled webhook failure")

func (m *modelDelegate) count(status string) {
	v, _ := m.byStatus.LoadOrStore(status, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (m *modelDelegate) attempt(n int) error {
	m.attempts.Add(1)
	latency := m.beh.latency(n)
	if o := m.beh.outageAt(m.clk.now()); o != nil {
		switch o.Kind {
		case "refuse":
			m.count("<error>")
			return fmt.Errorf("%w: connection refused", errModel)
		case "hang":
			time.Sleep(clientTimeout)
			m.count("<error>")
			return fmt.Errorf("%w: timeout", errModel)
		default:
			time.Sleep(latency)
			m.count(fmt.Sprint(o.Status))
			return fmt.Errorf("%w: status %d", errModel, o.Status)
		}
	}
	time.Sleep(latency)
	if m.beh.ErrorRate > 0 {
		m.rngMu.Lock()
		fail := m.rng.Float64() < m.beh.ErrorRate
		m.rngMu.Unlock()
		if fail {
			m.count(fmt.Sprint(m.beh.ErrorStatus))
			return fmt.Errorf("%w: status %d", errModel, m.beh.ErrorStatus)
		}
	}
	m.count("200")
	return nil
}

func (m *modelDelegate) ProcessEvents(evs ...*auditinternal.Event) bool {
	n := len(evs)
	if m.backend == "log" {
		m.attempts.Add(1)
		now := m.clk.now()
		for _, st := range m.logb.Stalls {
			if now >= st.Start && now < st.End {
				time.Sleep(time.Until(m.clk.at(st.End)))
			}
		}
		time.Sleep(time.Duration((m.logb.WriteSeconds + m.logb.WritePerEventSeconds*float64(n)) * float64(time.Second)))
		m.led.markDelivered(eventIDs(evs), time.Since(m.clk.t0).Nanoseconds())
		return true
	}
	err := utilwebhook.WithExponentialBackoff(context.Background(),
		utilwebhook.DefaultRetryBackoffWithInitialDelay(m.backoff),
		func() error {
			err := m.attempt(n)
			if err == nil {
				m.led.markDelivered(eventIDs(evs), time.Since(m.clk.t0).Nanoseconds())
			}
			return err
		},
		func(err error) bool { return err != nil })
	if err != nil {
		m.failed.Add(int64(n))
		return false
	}
	return true
}

func (m *modelDelegate) Run(stopCh <-chan struct{}) error { return nil }
func (m *modelDelegate) Shutdown()                        {}
func (m *modelDelegate) String() string                   { return "model-" + m.backend }
