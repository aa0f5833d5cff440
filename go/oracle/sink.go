package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sink is the in-process audit webhook receiver (HTTPS on 127.0.0.1, HTTP/2 like a real sink).
// It injects the latency, random error statuses and outage windows of the "webhook" behaviour.
type sink struct {
	beh    *WebhookBehaviour
	clk    *clock
	led    *ledger
	srv    *http.Server
	addr   string
	caPEM  []byte
	rngMu  sync.Mutex
	rng    *mrand.Rand
	closed chan struct{}

	mu        sync.Mutex
	ln        net.Listener
	refusing  int
	conns     map[net.Conn]struct{}
	serveErrs []error

	requests    atomic.Int64
	inflight    atomic.Int64
	maxInflight atomic.Int64
	delivered   atomic.Int64
	byStatus    sync.Map // string -> *atomic.Int64
	timers      []*time.Timer

	detail bool
	reqMu  sync.Mutex
	reqLog []RequestRecord
}

// RequestRecord is one HTTP request seen by the receiver (output "requests_detail").
type RequestRecord struct {
	Arrive  float64 `json:"arrive"`
	End     float64 `json:"end"`
	FirstID string  `json:"first_audit_id"`
	Events  int     `json:"events"`
	Status  string  `json:"status"`
}

func (s *sink) logRequest(arrive float64, ids []string, n int, status string) {
	if !s.detail {
		return
	}
	first := ""
	if len(ids) > 0 {
		first = ids[0]
	}
	rec := RequestRecord{Arrive: arrive, End: s.clk.now(), FirstID: first, Events: n, Status: status}
	s.reqMu.Lock()
	s.reqLog = append(s.reqLog, rec)
	s.reqMu.Unlock()
}

const sinkDomain = "audit-sink.local"

func newSink(beh *WebhookBehaviour, clk *clock, led *ledger, seed int64) (*sink, error) {
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	s := &sink{
		beh: beh, clk: clk, led: led, caPEM: certPEM,
		rng:    mrand.New(mrand.NewPCG(uint64(seed), 0x5eed)),
		closed: make(chan struct{}),
		conns:  map[net.Conn]struct{}{},
	}
	s.srv = &http.Server{
		Handler:   s,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ConnState: s.connState,
		ErrorLog:  nil,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	return s, nil
}

func (s *sink) serve(ln net.Listener) {
	s.ln = ln
	go func() {
		err := s.srv.ServeTLS(ln, "", "")
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.mu.Lock()
			s.serveErrs = append(s.serveErrs, err)
			s.mu.Unlock()
		}
	}()
}

func (s *sink) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateNew:
		s.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	}
}

// scheduleOutages arms timers for "refuse" windows: the listener is closed (so dials get
// ECONNREFUSED from the kernel) and open connections are dropped; at the window end the same
// port is listened on again.
func (s *sink) scheduleOutages() {
	for _, o := range s.beh.Outages {
		if o.Kind != "refuse" {
			continue
		}
		s.timers = append(s.timers,
			time.AfterFunc(time.Until(s.clk.at(o.Start)), s.startRefusing),
			time.AfterFunc(time.Until(s.clk.at(o.End)), s.stopRefusing))
	}
}

func (s *sink) startRefusing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refusing++
	if s.refusing > 1 {
		return
	}
	if s.ln != nil {
		_ = s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		_ = c.Close()
	}
}

func (s *sink) stopRefusing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refusing--
	if s.refusing > 0 {
		return
	}
	select {
	case <-s.closed:
		return
	default:
	}
	var err error
	for i := 0; i < 50; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			s.serve(ln)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.serveErrs = append(s.serveErrs, fmt.Errorf("re-listen on %s after refuse window: %v", s.addr, err))
}

func (s *sink) count(status string) {
	v, _ := s.byStatus.LoadOrStore(status, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (s *sink) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.closed:
	}
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	arrive := s.clk.now()
	s.requests.Add(1)
	cur := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		mx := s.maxInflight.Load()
		if cur <= mx || s.maxInflight.CompareAndSwap(mx, cur) {
			break
		}
	}
	var list struct {
		Items []struct {
			AuditID string `json:"auditID"`
		} `json:"items"`
	}
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(body, &list)
	}
	if err != nil {
		s.count("400")
		http.Error(w, "bad EventList: "+err.Error(), http.StatusBadRequest)
		return
	}
	n := len(list.Items)
	ids := make([]string, n)
	for i, it := range list.Items {
		ids[i] = it.AuditID
	}
	status := "?"
	defer func() { s.logRequest(arrive, ids, n, status) }()
	latency := s.beh.latency(n)
	if o := s.beh.outageAt(arrive); o != nil {
		switch o.Kind {
		case "hang": // never answer; the client gives up at its 30 s timeout
			s.count("hang")
			status = "hang"
			select {
			case <-r.Context().Done():
			case <-s.closed:
			}
			return
		case "refuse": // raced with the listener close: drop the connection
			s.count("reset")
			status = "reset"
			panic(http.ErrAbortHandler)
		case "status":
			s.sleep(latency)
			status = fmt.Sprint(o.Status)
			s.count(status)
			if o.RetryAfter != nil {
				w.Header().Set("Retry-After", strconv.Itoa(*o.RetryAfter))
			}
			http.Error(w, "audit-tune outage", o.Status)
			return
		}
	}
	s.sleep(latency)
	if s.beh.ErrorRate > 0 {
		s.rngMu.Lock()
		fail := s.rng.Float64() < s.beh.ErrorRate
		s.rngMu.Unlock()
		if fail {
			status = fmt.Sprint(s.beh.ErrorStatus)
			s.count(status)
			http.Error(w, "audit-tune injected error", s.beh.ErrorStatus)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("{}"))
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.count("200")
	status = "200"
	s.delivered.Add(int64(s.led.markDelivered(ids, time.Since(s.clk.t0).Nanoseconds())))
}

func (s *sink) close() {
	close(s.closed)
	for _, t := range s.timers {
		t.Stop()
	}
	_ = s.srv.Close()
}

// kubeconfig writes a webhook kubeconfig for one instance. Each instance gets its own TLS server
// name so client-go's TLS transport cache gives each its own transport, like separate apiservers.
func (s *sink) kubeconfig(dir string, inst int) (string, error) {
	name := fmt.Sprintf("apiserver-%d.%s", inst, sinkDomain)
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: audit-sink
  cluster:
    server: https://%s/audit
    tls-server-name: %s
    certificate-authority-data: %s
users:
- name: apiserver
  user: {}
contexts:
- name: audit
  context: {cluster: audit-sink, user: apiserver}
current-context: audit
`, s.addr, name, base64.StdEncoding.EncodeToString(s.caPEM))
	p := filepath.Join(dir, fmt.Sprintf("webhook-%d.kubeconfig", inst))
	return p, os.WriteFile(p, []byte(cfg), 0o600)
}

func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "audit-tune oracle sink"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"*." + sinkDomain},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}
