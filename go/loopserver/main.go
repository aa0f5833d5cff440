// loopserver answers every request with 200 and a JSON body on 127.0.0.1, over HTTP/1.1 with
// keep-alive (plain, or TLS with -cert/-key). It is the shared target of bench/bench_loadtest.py,
// which runs the audit-tune load generator and vegeta against it in turn: a server cheap enough
// that the generator, not the target, is what the benchmark measures. It prints its URL on
// stdout once listening and counts requests (GET /__count answers the count so far).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
)

func main() {
	cert := flag.String("cert", "", "server certificate (PEM); with -key: serve TLS")
	key := flag.String("key", "", "server key (PEM)")
	flag.Parse()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var n atomic.Int64
	body := []byte("{}")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/__count" {
			w.Write([]byte(strconv.FormatInt(n.Load(), 10)))
			return
		}
		n.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
	srv := &http.Server{Handler: h}
	scheme := "http"
	if *cert != "" {
		scheme = "https"
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// HTTP/1.1 only, as the apiserver's clients here speak it.
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"http/1.1"}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	fmt.Printf("%s://%s\n", scheme, ln.Addr().String())
	os.Stdout.Sync()
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
