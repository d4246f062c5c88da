package graceful

import (
	"encoding/json"
	"net/http"
)

// adminHandler serves the admin endpoint: GET /status, POST /drain, and the health checks.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { s.writeStatus(w) })
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, _ *http.Request) {
		s.Drain("admin endpoint")
		s.writeStatus(w)
	})
	mux.HandleFunc("GET "+s.cfg.ReadyPath, func(w http.ResponseWriter, _ *http.Request) { s.serveReady(w) })
	mux.HandleFunc("GET "+s.cfg.LivePath, func(w http.ResponseWriter, _ *http.Request) { s.serveLive(w) })
	return mux
}

func (s *Server) writeStatus(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.Status())
}

// serveReady fails from draining on, so the kubelet marks the pod unready.
func (s *Server) serveReady(w http.ResponseWriter) {
	if st := s.State(); st != Running {
		http.Error(w, st.String(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// serveLive stays up until the server has stopped: draining is not a reason to restart.
func (s *Server) serveLive(w http.ResponseWriter) {
	if s.State() == Stopped {
		http.Error(w, "stopped", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}
