package main

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// traceSink is an OTLP/HTTP collector that counts the spans the services export and
// keeps of them only what the hops are made of: with BENCH_TRACES=1 the bench measures
// the services exporting every span, the most tracing costs them; in the hop runs, two
// services export theirs.
type traceSink struct {
	srv     *http.Server
	url     string
	spans   atomic.Int64
	exports atomic.Int64
	log     traceLog // the spans the hops are made of
}

func startTraceSink() (*traceSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &traceSink{url: "http://" + ln.Addr().String()}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				s.spans.Add(int64(len(ss.Spans)))
				for _, span := range ss.Spans {
					s.log.add(span)
				}
			}
		}
		s.exports.Add(1)
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go func() { _ = s.srv.Serve(ln) }() // ends when close closes the listener
	return s, nil
}

func (s *traceSink) close() { _ = s.srv.Close() }
